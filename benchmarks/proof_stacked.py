"""Both marks on one victim: `scramble` then `watermark`, and `divqat verify` within 1,000 suspect queries.

    python benchmarks/proof_stacked.py --grid runs/insiders --out runs/proof --rate 0.005
    python benchmarks/proof_stacked.py --grid runs/order --out runs/proof_validation --seeds 0 1 2 \
        --thieves validation:500  # the validation pool's thieves, where a test of the marks is chosen
    python benchmarks/proof_stacked.py --grid runs/order --out runs/proof --thieves ood:500:0.5  # drops answers < 0.5
    divqat run configs/proof.yaml --out runs/order --jobs 2  # six seeds' victims and their twins, then:
    python benchmarks/proof_stacked.py --grid runs/order --out runs/proof --thieves ood:500 ood:500:0.5 in:0 --trained 3
    python benchmarks/proof_stacked.py --grid runs/order --out runs/proof_class --scramble-per class  # per class

The order test (behind `scramble`) proves soft-label clones; a thief that reads only the top-1
reads no order, and only the watermark's marks can prove it. So each victim of
configs/insiders.yaml (QAT and outlier-aware, 3 seeds) answers behind both, as
`divqat serve --defense scramble:secret_file=S --watermark RATE --secret-file W` answers:
the watermark's secret chosen as `divqat secret W --victim RUN --rate RATE` chooses it (on the
victim's own training images), scramble's its own. Thieves: configs/insiders.yaml's KnockoffNets
(cnn, 10k queries, 10 epochs, constant rate) with 500 in-distribution images in the digits pool
and on the whole thief split, top-1 and soft answers, 3 seeds. Each clone is verified against
its own account's record - the watermark's test and the order test sharing 1,000 suspect
queries, p < 1e-6 over both (Bonferroni). Innocents, each verified against each account of a
victim as a suspect is (1,000 queries each): the same victims' clones of the grid that were
stolen without these secrets (undefended, every thief of that grid) against their victim's; each
marked clone against every *other* victim's (another seed or method, other secrets); and with
`--trained N`, LeNet-5, cnn and ResNet-8 trained on the true labels (N seeds each) against every
victim's. Each job's result and record are kept under
--out (a rerun reuses them). `--wash` also washes each clone as benchmarks/watermark_eval.py washes
(pruned, re-quantized, fine-tuned on its own top-1 labels, distilled into LeNet-5) and verifies
the washed models the same way (kept in the job's washes.json). `--plot F` draws detection
against clone accuracy for every clone of the run, washed ones included. `--scramble-per class`
serves scramble's order per top-1 class (verify_order.class_test); `--order-innocents DIR` then
verifies DIR's clones of the same victims (per image, the same watermark) against these orders.
"""

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from watermark_eval import DISTILLATIONS, answer_of, load_surrogate, trained_innocents, washes

from divqat import artifacts
from divqat.blackbox import load_backend
from divqat.configs import AttackConfig
from divqat.data import load_splits
from divqat.defenses import create_defense
from divqat.defenses.watermark import Record
from divqat.defenses.watermark_key import choose_secret
from divqat.extraction import steal, thief_pool
from divqat.train import predict_proba
from divqat.verify import verify

SIGNIFICANCE = 1e-6
THIEVES = ("ood:500", "in:0")  # pool:in-distribution images, each with top-1 and soft answers
TRAINED_CACHE = Path("runs/innocents-trained")
ATTACK = {"attack": "knockoff", "budget": 10_000, "surrogate": "cnn", "epochs": 10, "schedule": "constant"}


def secrets_for(victim_dir: Path, victim, splits, rate: float, out: Path) -> tuple[Path, Path]:
    """(scramble's secret, the watermark's: chosen on the victim's own training images), kept in out."""
    scramble, mark = out / "secrets" / f"{victim_dir.name}.scramble", out / "secrets" / f"{victim_dir.name}.watermark"
    if not mark.exists():
        mark.parent.mkdir(parents=True, exist_ok=True)
        draw = random.Random(f"proof {victim_dir.name}").randbytes
        own = splits.victim_train
        images, labels = own.images[:20_000], own.labels[:20_000]
        probs = torch.cat([victim(b) for b in images.split(2048)])
        scramble.write_bytes(draw(32))
        mark.write_bytes(choose_secret(rate, probs, images, labels, draw=draw)[0])
    return scramble, mark


def label(victim_dir: Path) -> str:
    method = json.loads((victim_dir / "config.json").read_text())["victim"]["method"]
    return "QAT" if method == "qat" else "outlier-aware"


def thief_name(config: AttackConfig) -> str:
    where = "whole split" if config.pool == "in" else f"{config.pool} + {config.in_seeds}"
    if config.confidence_tau:
        where += f", drops answers below {config.confidence_tau:g}"
    return f"{where}, {'top-1' if config.labels == 'hard' else 'soft'}"


def load_model(directory: Path, splits):
    return answer_of(load_surrogate(ATTACK["surrogate"], directory, splits))


def cells(got: list[dict]) -> str:
    """A table row's cells for some clones: accuracy, gap to the victim, verified, both tests' p."""
    acc = torch.tensor([r["accuracy"] for r in got]) * 100
    gap = torch.tensor([r["victim_accuracy"] - r["accuracy"] for r in got]) * 100
    wm = ", ".join(f"{r.get('watermark_p', float('nan')):.0e}" for r in got)
    order = ", ".join(f"{r.get('order_p', float('nan')):.0e}" for r in got)
    return (f"{acc.mean():.1f} +- {acc.std():.1f} | {gap.min():.1f} .. {gap.max():.1f} | "
            f"{sum(r['stolen'] for r in got)}/{len(got)} | {wm} | {order}")  # fmt: skip


def washed_verdicts(job: Path, config: AttackConfig, record: Record, splits, wash: list[str] | None) -> list[dict]:
    """The job's clone washed each way (watermark_eval.washes) and verified again: [{wash, accuracy,
    watermark_p, order_p, stolen}], kept in the job's washes.json. `wash`: the washes to add where
    the file lacks them (all: []; None: none - what was washed before is only shown again)."""
    cache = job / "washes.json"
    out = json.loads(cache.read_text()) if cache.exists() else []
    done = {w["wash"] for w in out}
    if wash is None or (wash and done.issuperset(wash)):
        return out
    clone = load_surrogate(ATTACK["surrogate"], job, splits)
    for name, make in washes(clone, thief_pool(config, splits), splits, config.seed).items():
        if name in done or (wash and name not in wash):
            continue
        model = make()
        verdicts = verify(answer_of(model), {job.name: record}, significance=SIGNIFICANCE, max_queries=1000)
        accuracy = (predict_proba(model, splits.test.images).argmax(-1) == splits.test.labels).float()
        out.append({"wash": name, "accuracy": accuracy.mean().item(),
                    **{f"{v['test']}_p": v["p_value"] for v in verdicts["accounts"]},
                    "stolen": any(v["stolen"] for v in verdicts["accounts"])})  # fmt: skip
        cache.write_text(json.dumps(out, indent=2))  # each wash kept as it comes
    return out


def plot(rows: list[dict], path: Path) -> None:
    """Detection against clone accuracy: each clone (washed or not) at its gap to the victim and
    the smaller of its tests' p-values; the verdict's line (p < 1e-6 over two tests) and 10 pp."""
    import math
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    markers = dict(zip(dict.fromkeys(r.get("wash", "none") for r in rows), "os^vDxP*", strict=False))
    for r in rows:
        p = min(r.get("watermark_p", 1.0), r.get("order_p", 1.0))
        colour = "C0" if r["thief"].endswith("top-1") else "C1"
        ax.scatter(100 * (r["victim_accuracy"] - r["accuracy"]), -math.log10(max(p, 1e-300)), s=16, c=colour,
                   marker=markers[r.get("wash", "none")], alpha=0.8)  # fmt: skip
    for wash, marker in markers.items():
        ax.scatter([], [], c="grey", marker=marker, label=textwrap.fill(wash, 32))
    ax.scatter([], [], c="C0", label="top-1 thief")
    ax.scatter([], [], c="C1", label="soft thief")
    ax.axhline(-math.log10(SIGNIFICANCE / 2), color="k", ls="--", lw=1, label="p = 5e-7 (1e-6 over two tests)")
    ax.axvline(10, color="k", ls=":", lw=1, label="10 pp below the victim")
    ax.set(xlabel="victim - clone accuracy (pp, test set)", ylabel="-log10 p (the smaller test's)", yscale="symlog",
           title="Detection against clone accuracy")  # fmt: skip
    ax.set_ylim(bottom=0)  # -log10 p >= 0: no band below
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes: no point hidden
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@dataclass
class Innocents:
    """Verifications of models that never saw a record: how many, how many flagged, the smallest p."""

    tested: int = 0
    flagged: int = 0
    smallest: float = 1.0

    def verify(self, suspect, records: dict[str, Record]) -> None:
        for name, record in records.items():  # as a suspect is verified against one account
            self.count(verify(suspect, {name: record}, significance=SIGNIFICANCE, max_queries=1000)["accounts"])

    def count(self, verdicts: list[dict]) -> None:
        """One verification's verdicts (every test it made)."""
        self.tested += 1
        self.flagged += any(v["stolen"] for v in verdicts)
        self.smallest = min([self.smallest, *(v["p_value"] for v in verdicts)])

    def __str__(self) -> str:
        return f"{self.flagged} of {self.tested} verifications flagged (smallest p {self.smallest:.2g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/insiders"))
    parser.add_argument("--out", type=Path, default=Path("runs/proof"))
    parser.add_argument("--rate", type=float, default=0.005)
    parser.add_argument("--unsure-below", type=float, default=0.0,
                        help="mark answers whose top probability is below this at --unsure-rate (0: off)")  # fmt: skip
    parser.add_argument("--unsure-rate", type=float, default=0.0)
    parser.add_argument("--mark-probability", type=float, default=0.0,
                        help="the least probability a marked answer gives its mark (0: the swap alone)")  # fmt: skip
    parser.add_argument("--scramble-per", default="image", choices=["image", "class"],
                        help="scramble's permutations: one per image's code, or one per top-1 class")  # fmt: skip
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="victims' seeds (default: all)")
    parser.add_argument("--victims", nargs="+", default=["qat", "divqat"], help="victims' methods")
    parser.add_argument("--thieves", nargs="+", default=list(THIEVES),
                        help="pool:in_seeds[:confidence_tau], each with top-1 and soft answers")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a grid's with --jobs 2: 1)")
    parser.add_argument("--labels", nargs="+", default=["hard", "soft"], choices=["hard", "soft"],
                        help="the thieves' answers (a mark's lift changes only the soft ones')")  # fmt: skip
    parser.add_argument(
        "--wash",
        action="store_true",
        help="also wash each clone and verify it again (kept in the job: shown in every later run)",
    )
    parser.add_argument("--wash-only", nargs="+", default=None, metavar="WASH",
                        help="with --wash: only these washes (watermark_eval.washes' names), e.g. "
                        f"'{next(reversed(DISTILLATIONS))}'")  # fmt: skip
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="also plot detection against clone accuracy (every clone of this run, washed ones too)",
    )
    parser.add_argument("--order-innocents", type=Path, default=None,
                        help="another --out of these victims (e.g. scramble per image): its clones against this "
                        "run's orders alone (they saw the same watermark, not these orders)")  # fmt: skip
    parser.add_argument("--trained", type=int, default=0, help="also verify LeNet-5, cnn and ResNet-8 "
                        "trained on true labels, this many seeds each (kept in runs/innocents-trained)")  # fmt: skip
    args = parser.parse_args()
    if args.wash_only and not args.wash:
        parser.error("--wash-only needs --wash")
    unknown = set(args.wash_only or ()) - set(washes(None, None, None, 0))  # the names only: nothing computed
    if unknown:
        parser.error(f"no such wash: {', '.join(sorted(unknown))} (watermark_eval.washes)")
    torch.set_num_threads(args.threads)
    thieves = [(pool, int(n), float(tau[0]) if tau else 0.0, labels)
               for pool, n, *tau in (t.split(":") for t in args.thieves) for labels in args.labels]  # fmt: skip
    splits = load_splits("fashion-mnist", args.data_root)
    innocent_jobs = [json.loads(p.read_text()) | {"dir": p.parent}
                     for p in sorted(args.grid.glob("jobs/attack-*/result.json"))]  # fmt: skip
    innocent_jobs = [j for j in innocent_jobs if not j["defenses"] and not j["augment"]]
    counts = [(arch, args.trained) for arch in ("lenet5", "cnn", "resnet8")]
    trained = trained_innocents(splits, list(range(args.trained)), counts, TRAINED_CACHE) if args.trained else {}
    rows, washed = [], []
    twins, models, others, orders_only = Innocents(), Innocents(), Innocents(), Innocents()
    marked = {}  # victim dir -> ({account: record}, [its marked clones])
    for victim_dir in sorted(args.grid.glob("jobs/victim-*")):
        own = json.loads((victim_dir / "config.json").read_text())["victim"]
        if own["method"] not in args.victims or (args.seeds is not None and own["seed"] not in args.seeds):
            continue
        victim = load_backend(victim_dir, "onnx")
        scramble_key, mark_key = secrets_for(victim_dir, victim, splits, args.rate, args.out)
        mark = {"rate": args.rate, "secret_file": str(mark_key), "unsure_below": args.unsure_below,
                "unsure_rate": args.unsure_rate, "mark_probability": args.mark_probability}  # fmt: skip
        scramble = {"secret_file": str(scramble_key), "per": args.scramble_per}
        defenses = (create_defense("scramble", scramble), create_defense("watermark", mark))
        seeds = own["seed"]
        records, clones = {}, []
        for pool, in_seeds, tau, labels in thieves:
            config = AttackConfig(**ATTACK, pool=pool, in_seeds=in_seeds, confidence_tau=tau, labels=labels, seed=seeds)
            job = args.out / "jobs" / f"{victim_dir.name}-{pool}-{in_seeds}{f'-tau{tau:g}' * bool(tau)}-{labels}"
            if not (job / "result.json").exists():
                record = Record()
                surrogate, result = steal(victim, splits, config, defenses=defenses, record=record)
                job.mkdir(parents=True, exist_ok=True)
                artifacts.save_state(surrogate, job / "surrogate.safetensors")
                record.save(job / "record.safetensors")
                (job / "result.json").write_text(json.dumps(result, indent=2))
            result = json.loads((job / "result.json").read_text())
            records[job.name] = Record.load(job / "record.safetensors")
            suspect = load_model(job, splits)
            clones.append(suspect)
            verdicts = verify(suspect, {job.name: records[job.name]}, significance=SIGNIFICANCE,
                              max_queries=1000)  # fmt: skip
            by_test = {v["test"]: v for v in verdicts["accounts"]}
            rows.append({"victim": label(victim_dir), "thief": thief_name(config), "seed": seeds,
                         "accuracy": result["surrogate_accuracy"], "victim_accuracy": result["victim_accuracy"],
                         "queries": verdicts["queries"], "marks": len(records[job.name]),
                         **{f"{t}_p": v["p_value"] for t, v in by_test.items()},
                         "stolen": any(v["stolen"] for v in by_test.values())})  # fmt: skip
            if args.wash or (job / "washes.json").exists():  # washed before: shown again
                wash = (args.wash_only or []) if args.wash else None
                washed_ones = washed_verdicts(job, config, records[job.name], splits, wash)
                washed += [{**rows[-1], **w} for w in washed_ones]
        for job in innocent_jobs:
            if job["victim"] == str(victim_dir):
                twins.verify(load_model(job["dir"], splits), records)
        for suspect in trained.values():
            models.verify(suspect, records)
        if args.order_innocents:
            orders = {name: Record(orders=r.orders) for name, r in records.items()}
            for other in sorted(args.order_innocents.glob(f"jobs/{victim_dir.name}-*/surrogate.safetensors")):
                orders_only.verify(load_model(other.parent, splits), orders)
        marked[victim_dir] = (records, clones)
    for victim_dir, (records, _) in marked.items():  # each clone against every other victim's accounts
        for other, (_, their_clones) in marked.items():
            if other != victim_dir:
                for suspect in their_clones:
                    others.verify(suspect, records)
    unsure = f", {100 * args.unsure_rate:g} % below {args.unsure_below:g}" if args.unsure_below else ""
    print(f"rate {100 * args.rate:g} %{unsure}, scramble per {args.scramble_per}, 1,000 suspect queries per "
          f"verification (both tests), p < {SIGNIFICANCE:g}")  # fmt: skip
    print("| victim | thief | clone acc % | victim - clone (pp) | verified | watermark p | order p |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for victim_label in ("QAT", "outlier-aware"):
        for thief in dict.fromkeys(r["thief"] for r in rows):
            got = [r for r in rows if r["victim"] == victim_label and r["thief"] == thief]
            if not got:
                continue
            print(f"| {victim_label} | {thief} | {cells(got)} |")
    print("\nPer clone: | victim | thief | seed | marks in the record | watermark p | order p | verified |")
    for r in rows:
        print(f"| {r['victim']} | {r['thief']} | {r['seed']} | {r['marks']} | {r.get('watermark_p', 1):.1e} | "
              f"{r.get('order_p', 1):.1e} | {r['stolen']} |")  # fmt: skip
    if washed:
        print("\n| victim | thief | wash | clone acc % | victim - clone (pp) | verified | watermark p | order p |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for victim_label in ("QAT", "outlier-aware"):
            for thief in dict.fromkeys(r["thief"] for r in washed):
                for wash in dict.fromkeys(r["wash"] for r in washed):
                    got = [r for r in washed if (r["victim"], r["thief"], r["wash"]) == (victim_label, thief, wash)]
                    if not got:
                        continue
                    print(f"| {victim_label} | {thief} | {wash} | {cells(got)} |")
    print(f"\nInnocents, each verified against each account of a victim, as a suspect is:\n"
          f"- the same victims' clones stolen without these secrets, against their victim's: {twins}\n"
          f"- these clones, against every other victim's (another seed, other secrets): {others}")  # fmt: skip
    if trained:
        print(f"- models trained on true labels ({', '.join(trained)}), against every victim's: {models}")
    if args.plot:
        washed_clones = {(w["victim"], w["thief"], w["seed"]) for w in washed}  # their "none" is the clone
        plot(washed + [r for r in rows if (r["victim"], r["thief"], r["seed"]) not in washed_clones], args.plot)
    if args.order_innocents:
        print(f"- {args.order_innocents}'s clones of the same victims, against these orders alone: {orders_only}")


if __name__ == "__main__":
    main()
