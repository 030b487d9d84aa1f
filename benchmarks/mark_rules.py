"""Which statistic the watermark's test sums: candidates compared on the clones of proof_stacked.py.

    python benchmarks/proof_stacked.py --grid runs/order --out runs/proof_validation --seeds 0 1 2 \
        --thieves validation:500 validation:500:0.5
    python benchmarks/mark_rules.py --proof runs/proof_validation --grid runs/order
    python benchmarks/mark_rules.py --proof runs/proof --grid runs/order  # then the evaluation's clones

The watermark's test (divqat/verify.py) sums, over an account's watermarked images, a score of
the mark m_i among the K - 1 classes other than the victim's top-1 v_i. Any score the suspect's
answer alone decides (and the victim's own answer, which the mark does not change) keeps the
null exact: for a model that never saw the marks, m_i is uniform over those K - 1 classes, so
each image's term is uniform over its K - 1 scores, independently, and the sum's distribution
is their convolution (`score_sum_p_value`, exact for scores on a grid). The rank sum weighs
a mark moved from seventh to sixth place as much as one moved to first; a clone trained on top-1
labels may instead hold a few marks clearly and none of the rest. Candidates: the rank (the test
before this benchmark), whether the mark is first, the log of its rank, its log-probability's
z-score among the K - 1 (and of the probability, and of the log-probability after the victim's
own log-probabilities are regressed out: the second test); that z-score weighted by the
confidence the mark was served with (the victim's own top probability: the test since); and the
log-likelihood ratio of a clone that learned a fraction eps of its marks (`mixture`). Each clone
is verified as `divqat verify` verifies it (its own account, the watermark's rows then the order
test in 1,000 queries, p < 1e-6 over both tests), with each candidate in the watermark's place;
and each of the grid's undefended clones of the same victim against every record of that victim
(innocents). Chosen a priori: the most clones verified, then the largest sum of -log10 of the
watermark's p over the top-1 clones. Writes nothing.
"""

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import torch
from proof_stacked import ATTACK, label, load_model

from divqat.blackbox import load_backend
from divqat.data import load_splits
from divqat.defenses.watermark import Record
from divqat.verify import log_residuals, mark_ranks, mark_scores, residual_z, score_sum_p_value, verify

SIGNIFICANCE = 1e-6


def all_ranks(answers: torch.Tensor, top1: torch.Tensor) -> torch.Tensor:
    """(n, K): each class's rank among the K - 1 others, as mark_ranks would give it if it were the mark."""
    k = answers.shape[1]
    return torch.stack([mark_ranks(answers, top1, torch.full_like(top1, c)) for c in range(k)], 1).double()


def mixture(answers: torch.Tensor, natural: torch.Tensor | None, top1: torch.Tensor, eps: float) -> torch.Tensor:
    """(n, K): the log-likelihood ratio of a clone that learned a fraction `eps` of its marks -
    the mark drawn from the suspect's answer q over the K - 1 (renormalised; from the residuals
    less the victim's when `natural` is given) - against one that learned none (uniform):
    log(1 - eps + eps (K - 1) q_c). Bounded below, so a mark the thief never learned (dropped,
    washed) costs little, where a z-score can fall far."""
    a, keep = log_residuals(answers, natural, top1)
    q = torch.where(keep, a, -float("inf")).softmax(1)
    return torch.where(keep, (1 - eps + eps * (keep.sum(1, keepdim=True) * q)).log(), 0.0)


# name -> (scores (n, K), higher = more like the mark; grid step)
CANDIDATES = {
    "rank sum (the first test)": (lambda a, n, t: -all_ranks(a, t), 1.0),
    "mark first (count)": (lambda a, n, t: (all_ranks(a, t) == 0).double(), 1.0),
    "log rank": (lambda a, n, t: -(all_ranks(a, t) + 1).log(), 0.01),
    "z of log-probability": (lambda a, n, t: residual_z(a, None, t), 0.02),
    "z of probability": (lambda a, n, t: residual_z(a.double().exp(), None, t), 0.02),  # log(exp(p)) = p
    "z of log-probability less the victim's (the second test)": (lambda a, n, t: residual_z(a, n, t), 0.02),
    "the same, weighted by the served confidence (verify.py now)": (lambda a, n, t: mark_scores(a, n, t), 0.02),
    "likelihood ratio, eps 0.1": (lambda a, n, t: mixture(a, None, t, 0.1), 0.01),
    "likelihood ratio, eps 0.3": (lambda a, n, t: mixture(a, None, t, 0.3), 0.01),
    "likelihood ratio less the victim's, eps 0.1": (lambda a, n, t: mixture(a, n, t, 0.1), 0.01),
    "likelihood ratio less the victim's, eps 0.3": (lambda a, n, t: mixture(a, n, t, 0.3), 0.01),
}


def p_values(answers: torch.Tensor, natural: torch.Tensor, told: dict) -> dict[str, float]:
    top1, mark = told["top1"][: len(answers)], told["mark"][: len(answers)]
    out = {}
    for name, (score, step) in CANDIDATES.items():
        scores = score(answers, natural, top1)
        out[name] = score_sum_p_value(scores, top1, mark, step)
    return out


def judge(suspect, record: Record, natural: torch.Tensor) -> tuple[dict[str, float], float]:
    """(candidate -> the watermark's p, the order test's p): the rows `divqat verify` asks, as it asks them."""
    result = verify(suspect, {"account": record}, significance=SIGNIFICANCE, max_queries=1000)
    by_test = {v["test"]: v for v in result["accounts"]}
    asked = by_test["watermark"]["asked"]
    told = record.tensors()
    answers = suspect(told["images"][:asked])
    return p_values(answers, natural[:asked], told), by_test.get("order", {}).get("p_value", 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proof", type=Path, default=Path("runs/proof_validation"))
    parser.add_argument("--grid", type=Path, default=Path("runs/order"), help="the victims' grid (innocents too)")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = load_splits("fashion-mnist", args.data_root)
    rows, innocent = [], defaultdict(list)
    by_victim = defaultdict(list)
    for job in sorted(args.proof.glob("jobs/*/record.safetensors")):
        by_victim[job.parent.name.split("-")[1]].append(job.parent)
    for victim_id, jobs in by_victim.items():
        victim_dir = args.grid / "jobs" / f"victim-{victim_id}"
        victim = load_backend(victim_dir, "onnx")
        records = {job.name: Record.load(job / "record.safetensors") for job in jobs}
        natural = {name: victim(r.tensors()["images"]) for name, r in records.items()}

        for job in jobs:
            result = json.loads((job / "result.json").read_text())
            marks, order_p = judge(load_model(job, splits), records[job.name], natural[job.name])
            thief = f"{result['pool']} + {result['in_seeds']}, {'top-1' if result['labels'] == 'hard' else 'soft'}"
            thief += f", drops below {result['confidence_tau']:g}" if result.get("confidence_tau") else ""
            rows.append({"victim": label(victim_dir), "thief": thief, "marks": marks, "order": order_p,
                         "gap": 100 * (result["victim_accuracy"] - result["surrogate_accuracy"])})  # fmt: skip
        for twin in sorted(args.grid.glob("jobs/attack-*/result.json")):
            result = json.loads(twin.read_text())
            if result["victim"] != str(victim_dir) or result["defenses"] or result["augment"]:
                continue
            suspect = load_model(twin.parent, splits)
            for name in records:
                marks, order_p = judge(suspect, records[name], natural[name])
                for candidate, p in marks.items():
                    innocent[candidate].append(min(p, order_p))
    threshold = SIGNIFICANCE / 2  # the watermark's test and the order test, Bonferroni
    print(f"{len(rows)} marked clones; {len(next(iter(innocent.values()), []))} innocent verifications; "
          f"p < {SIGNIFICANCE:g} over both tests; surrogate {ATTACK['surrogate']}")  # fmt: skip
    print("\n| candidate | verified | top-1 clones verified | sum -log10 p (top-1 clones) | innocents flagged | "
          "smallest innocent p |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for candidate in CANDIDATES:
        stolen = [min(r["marks"][candidate], r["order"]) < threshold for r in rows]
        top1 = [r for r in rows if "top-1" in r["thief"]]
        top1_stolen = sum(min(r["marks"][candidate], r["order"]) < threshold for r in top1)
        strength = sum(-math.log10(max(r["marks"][candidate], 1e-300)) for r in top1)
        flagged = sum(p < threshold for p in innocent[candidate])
        print(f"| {candidate} | {sum(stolen)}/{len(rows)} | {top1_stolen}/{len(top1)} | {strength:.0f} | "
              f"{flagged}/{len(innocent[candidate])} | {min(innocent[candidate], default=1):.2g} |")  # fmt: skip
    print("\nPer clone (the watermark's p per candidate, then the order test's):")
    print("| victim | thief | victim - clone (pp) | " + " | ".join(CANDIDATES) + " | order |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in CANDIDATES) + " | --- |")
    for r in sorted(rows, key=lambda r: (r["victim"], r["thief"])):
        cells = " | ".join(f"{r['marks'][c]:.1e}" for c in CANDIDATES)
        print(f"| {r['victim']} | {r['thief']} | {r['gap']:.1f} | {cells} | {r['order']:.1e} |")


if __name__ == "__main__":
    main()
