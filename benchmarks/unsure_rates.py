"""The watermark's rate on unsure answers (`unsure_below`, `unsure_rate`): the settings chosen,
then their benign cost.

    python benchmarks/unsure_rates.py --grid runs/order                          # the choice (seeds 0-2)
    python benchmarks/unsure_rates.py --grid runs/order --lifted                 # the choice, marks served sure
    python benchmarks/unsure_rates.py --grid runs/order --cost runs/proof/secrets  # test-set cost, every seed

The choice reads only what an owner has: the victim's own training images (the first 20,000),
for the benign cost, and the validation thieves' pool (validation + 500 in-distribution seeds,
as benchmarks/proof_stacked.py's validation thieves draw it), for the marks - never the test set
or an evaluation pool. Per kind of victim, the rule fixed before: the most served confidence
summed over the marks per 10,000 validation-thief queries (the weighted test's evidence grows
with it), at a benign cost on the training images no higher than the uniform 0.5 %'s. The
benign cost of a candidate is the expected one (rate x correct answers in each group), the
marks expected per 10,000 queries of the pool. `--lifted`: with each mark served at 0.9
(`mark_probability`), where a mark falls no longer sets how sure it is served, so the rule fixed
before counts marks instead - the most per 10,000 validation-thief queries, counted up to the
verification's share of its 1,000 suspect queries (500, beside the order test), at a benign
cost on the training images no higher than the uniform 0.5 %'s, sure answers marked at 0.1 %
at least; then the lowest cost. `--cost DIR`: the served accuracy lost on the test set, uniform
and chosen, with each victim's secret from DIR (proof_stacked's secrets).
"""

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import torch

from divqat.blackbox import load_backend
from divqat.configs import AttackConfig
from divqat.data import load_splits
from divqat.defenses import create_defense
from divqat.extraction import thief_pool

ATTACK = {"attack": "knockoff", "budget": 10_000, "surrogate": "cnn", "epochs": 10, "schedule": "constant"}
UNIFORM = (0.0, 0.005, 0.005)  # (below, rate, unsure rate)
CANDIDATES = [UNIFORM] + [
    (below, rate, unsure)
    for below in (0.5, 0.7, 0.9)
    for rate, unsure in ((0.004, 0.02), (0.003, 0.02), (0.003, 0.03), (0.002, 0.03), (0.002, 0.05))
]
LIFTED = [UNIFORM] + [
    (below, rate, unsure)
    for below in (0.4, 0.5, 0.6)
    for rate in (0.002, 0.001)
    for unsure in (0.05, 0.1, 0.15, 0.2, 0.3)
]
SHARE = 500  # the watermark's share of a verification's 1,000 suspect queries beside the order test
CHOSEN = {"qat": (0.7, 0.002, 0.03), "divqat": UNIFORM}  # what the rule chose (docs/divqat.md)
CHOSEN_LIFTED = (0.5, 0.001, 0.2)  # QAT's, with marks served at 0.9 (--lifted)


def victims(grid: Path, seeds):
    for directory in sorted(grid.glob("jobs/victim-*")):
        own = json.loads((directory / "config.json").read_text())["victim"]
        if own["method"] in CHOSEN and (seeds is None or own["seed"] in seeds):
            yield directory, own


def choose(grid: Path, splits, seeds, candidates: list[tuple[float, float, float]]) -> dict:
    rows = defaultdict(list)
    for directory, own in victims(grid, seeds):
        victim = load_backend(directory, "onnx")
        train = splits.victim_train
        probs = torch.cat([victim(b) for b in train.images[:20_000].split(4096)])
        correct = probs.argmax(1) == train.labels[:20_000]
        sure = probs.max(1).values
        pool = thief_pool(AttackConfig(**ATTACK, pool="validation", in_seeds=500, seed=own["seed"]), splits)
        asked = victim(pool).max(1).values
        for below, rate, unsure in candidates:
            low, pool_low = sure < below, asked < below
            cost = 100 * (rate * (correct & ~low).float().mean() + unsure * (correct & low).float().mean())
            marks = 10_000 * (rate * (~pool_low).float().mean() + unsure * pool_low.float().mean())
            served = 10_000 * (rate * (asked * ~pool_low).mean() + unsure * (asked * pool_low).mean())
            rows[own["method"], below, rate, unsure].append(
                (low.float().mean(), pool_low.float().mean(), cost, marks, served)
            )
    print("| victim | below | rate / unsure rate | training images below | validation pool below | "
          "cost on training images (pp) | marks per 10k | served confidence summed |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    means = {}
    for (method, below, rate, unsure), got in rows.items():
        mean = means[method, below, rate, unsure] = [statistics.mean(float(r[i]) for r in got) for i in range(5)]
        print(f"| {method} | {below:g} | {100 * rate:g} % / {100 * unsure:g} % | {mean[0]:.3f} | {mean[1]:.3f} | "
              f"{mean[2]:.3f} | {mean[3]:.0f} | {mean[4]:.0f} |")  # fmt: skip
    return means


def choose_lifted(means: dict) -> None:
    """The rule of --lifted, per kind of victim: marks counted up to SHARE, cost no higher than the
    uniform rate's, sure answers at 0.1 % at least; then the lowest cost."""
    for method in dict.fromkeys(m for m, *_ in means):
        bound = means[method, *UNIFORM][2]
        allowed = {tuple(c): v for (m, *c), v in means.items() if m == method and v[2] <= bound and c[1] >= 0.001}
        best = max(allowed, key=lambda c: (min(allowed[c][3], SHARE), -allowed[c][2]))
        print(f"{method}: below {best[0]:g}, {100 * best[1]:g} % / {100 * best[2]:g} % "
              f"({allowed[best][3]:.0f} marks per 10k, cost {allowed[best][2]:.3f} pp)")  # fmt: skip


def cost(grid: Path, splits, secrets: Path) -> None:
    images, labels = splits.test.images, splits.test.labels
    lost = defaultdict(list)
    for directory, own in victims(grid, None):
        secret = secrets / f"{directory.name}.watermark"
        if not secret.exists():
            continue
        probs = load_backend(directory, "onnx")(images)
        served = (probs.argmax(1) == labels).float().mean()
        settings = (("uniform 0.5 %", UNIFORM), ("chosen for QAT", CHOSEN["qat"]),
                    ("chosen for QAT, marks served sure", CHOSEN_LIFTED))  # fmt: skip
        for name, (below, rate, unsure) in settings:
            mark = create_defense("watermark", {"rate": rate, "unsure_below": below, "unsure_rate": unsure,
                                                "secret_file": str(secret)})  # fmt: skip
            marked = (mark(probs, images).argmax(1) == labels).float().mean()
            lost[own["method"], name].append(100 * float(served - marked))
    print("| victim | watermark | benign cost on the test set (pp) | largest | victims |")
    print("| --- | --- | --- | --- | --- |")
    for (method, name), got in lost.items():
        print(f"| {method} | {name} | {statistics.mean(got):.2f} +- {statistics.stdev(got):.2f} | {max(got):.2f} | "
              f"{len(got)} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/order"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="victims' seeds of the choice")
    parser.add_argument("--cost", type=Path, default=None, help="secrets folder: the test-set cost instead")
    parser.add_argument("--lifted", action="store_true", help="the choice with marks served at 0.9")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    splits = load_splits("fashion-mnist", args.data_root)
    if args.cost:
        cost(args.grid, splits, args.cost)
    elif args.lifted:
        choose_lifted(choose(args.grid, splits, args.seeds, LIFTED))
    else:
        choose(args.grid, splits, args.seeds, CANDIDATES)


if __name__ == "__main__":
    main()
