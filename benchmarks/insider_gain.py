"""What a victim gives a thief who holds N in-distribution images, beyond those images alone.

    divqat run configs/insiders.yaml --out runs/insiders --jobs 2
    python benchmarks/insider_gain.py --grid runs/insiders
    divqat run configs/confidence.yaml --out runs/confidence --jobs 2   # the confidence step, N = 500
    python benchmarks/insider_gain.py --grid runs/confidence --ns 500 --plot runs/confidence/insiders.png
    divqat run configs/own.yaml --out runs/own --jobs 2   # the thief that asks only about its own images
    python benchmarks/insider_gain.py --grid runs/own --ns 100 300 500 1000 3000 --plot docs/insiders-own.png \
        --xlabel "in-distribution images the thief holds (N), asked with augmented copies, 10k queries"

The grid's thieves query the victim; this script adds, per N and seed, the no-query baseline:
the same thief (its AttackConfig: surrogate, epochs, schedule, batch, augmentation) trained on
those N images with their true labels and no query at all - the same N images the grid's thief
of that seed mixed into its pool (`with_in_distribution`), drawn up to the same 10,000 training
samples with augmented copies (`augmented_sample`, as the thief's pool is drawn). The gain of a
victim at N: its best thief minus the best baseline, paired by seed; a grid whose thieves smooth
their targets (label_smoothing) gets baselines trained on the same smoothed labels too. Baselines
are written to GRID/baseline/N-SEED-AUG[-lsEPS].json (resumable); the table goes to stdout as
markdown, the plot to docs/insiders.png. Threads: one per process, as each grid job has under --jobs 2.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from divqat import metrics
from divqat.attacks import Thief
from divqat.configs import AttackConfig
from divqat.data import load_splits
from divqat.data.augment import augmented_sample, benign_shifts
from divqat.data.pools.registry import in_distribution_seeds
from divqat.train import predict_proba

WHOLE = 10_000  # Fashion-MNIST's thief split, all of it: the grid's pool `in`
NS = (0, 100, 300, 500, 1000, 3000, WHOLE)
VICTIMS = {"qat": "QAT", "outlier": "outlier-aware"}
# The grids' answer-side candidates, all keeping the top-1; ":2" - its probability told coarsely
# too, log-odds rounded to steps of 2 nats (`confidence_step`).
DEFENSES = ("flatten", "scramble", "flatten:2", "scramble:2")


def grid_results(grid: Path) -> list[dict]:
    """One row per finished grid thief. A victim behind a defense is `qat+scramble`; the top-1
    thief is not run against it, since a defense that keeps the top-1 gives that thief the same
    labels: its undefended row is its row there too."""
    rows = []
    for path in sorted(grid.glob("jobs/attack-*/result.json")):
        r = json.loads(path.read_text())
        victim = ("qat" if r["victim_method"] == "qat" else "outlier") + "".join(map(defense_key, r["defenses"]))
        rows.append({"victim": victim, "n": WHOLE if r["pool"] == "in" else r["in_seeds"], "seed": r["seed"],
                     "thief": thief_name(r), "accuracy": 100 * r["surrogate_accuracy"],
                     "label_smoothing": r.get("label_smoothing", 0.0)})  # fmt: skip
    top1 = [r for r in rows if r["thief"].startswith("top-1")]
    defended = {r["victim"] for r in rows if "+" in r["victim"]}
    return rows + [{**r, "victim": v} for v in sorted(defended) for r in top1 if v.startswith(r["victim"] + "+")]


def defense_key(defense: dict) -> str:
    step = defense.get("confidence_step", 0)
    return f"+{defense['name']}" + (f":{step:g}" if step else "")


def thief_name(r: dict) -> str:
    eps = r.get("label_smoothing", 0.0)
    return (
        {"soft": "soft", "hard": "top-1"}[r["labels"]]
        + (" + augment" if r["augment"] else "")
        + (f" + label smoothing {eps:g}" if eps else "")
    )


def baseline(splits, n: int, seed: int, augment: bool, label_smoothing: float = 0.0) -> float:
    """The grid thief's recipe on n true-labelled images of its own split, no query."""
    torch.set_num_threads(1)
    config = AttackConfig(attack="knockoff", budget=10_000, surrogate="cnn", epochs=10, schedule="constant",
                          augment=augment, seed=seed, label_smoothing=label_smoothing)  # fmt: skip
    held = in_distribution_seeds(splits.thief_pool, n, seed)  # the grid's thief of this seed holds these
    images, labels = held.images, held.labels
    generator = torch.Generator().manual_seed(seed)
    index, inputs = augmented_sample(images, config.budget, generator)
    targets = torch.nn.functional.one_hot(labels[index], splits.num_classes).float()
    thief = Thief(config, None, splits.input_shape, splits.num_classes, generator)
    model = thief.train_surrogate(inputs, targets)
    return 100 * metrics.accuracy(predict_proba(model, splits.test.images), splits.test.labels)


def baselines(grid: Path, seeds, data_root, ns=NS, smoothings=()) -> list[dict]:
    """The no-query baselines, plain and augmented, and without augmentation for each label
    smoothing the grid's thieves use."""
    out = grid / "baseline"
    out.mkdir(exist_ok=True)
    splits = None
    rows = []
    recipes = [(False, 0.0), (True, 0.0), *((False, eps) for eps in sorted(set(smoothings) - {0.0}))]
    for n in (n for n in ns if n):
        for seed in seeds:
            for augment, eps in recipes:
                path = out / (f"{n}-{seed}-{int(augment)}" + (f"-ls{eps:g}" if eps else "") + ".json")
                if not path.is_file():
                    splits = splits or load_splits("fashion-mnist", data_root)
                    accuracy = baseline(splits, n, seed, augment, eps)
                    path.write_text(json.dumps({"n": n, "seed": seed, "augment": augment, "label_smoothing": eps,
                                                "accuracy": accuracy}))  # fmt: skip
                    print(f"baseline N={n} seed={seed} augment={augment} eps={eps:g}: {accuracy:.2f}", flush=True)
                r = json.loads(path.read_text())
                thief = "true labels" + (" + augment" if augment else "")
                thief += f" + label smoothing {eps:g}" if eps else ""
                rows.append({"victim": "baseline", "n": n, "seed": seed, "thief": thief, "accuracy": r["accuracy"]})
    return rows


def best_per_seed(rows, victim, n) -> dict[int, float]:
    best = {}
    for r in rows:
        if r["victim"] == victim and r["n"] == n:
            best[r["seed"]] = max(best.get(r["seed"], 0.0), r["accuracy"])
    return best


def pm(values) -> str:
    values = list(values)
    if not values:
        return "-"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def victims_of(rows) -> list[str]:
    names = {r["victim"] for r in rows if r["victim"] != "baseline"}
    order = [v + d for v in VICTIMS for d in ("", *(f"+{x}" for x in DEFENSES))]
    return [v for v in order if v in names]


def shown_defense(defense: str) -> str:
    """`flatten:2` in words: `flatten, confidence step 2`."""
    return defense.replace(":", ", confidence step ")


def shown(victim: str) -> str:
    base, *defense = victim.split("+")
    return VICTIMS[base] + "".join(f" + {shown_defense(d)}" for d in defense)


def table(rows, ns=NS) -> str:
    """Per N: the baseline, then per victim its best thief and its gain over the baseline."""
    victims = victims_of(rows)
    headers = ["N", "no-query baseline", *(f"{shown(v)}: best thief (gain)" for v in victims)]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for n in ns:
        base = best_per_seed(rows, "baseline", n) if n else {s: 10.0 for s in range(100)}  # N = 0: chance
        cells = [f"{n:,}" + (" (whole split)" if n == WHOLE else ""), pm(base.values()) if n else "10.0 (chance)"]
        for v in victims:
            best = best_per_seed(rows, v, n)
            gain = pm(best[s] - base[s] for s in sorted(best) if s in base)
            cells.append(f"{pm(best.values())} ({gain})" if best else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def deltas(rows, ns=NS) -> str:
    """Each victim's best thief minus QAT's, paired by seed."""
    victims = [v for v in victims_of(rows) if v != "qat"]
    lines = ["| N | " + " | ".join(f"{shown(v)} - QAT" for v in victims) + " |", "|" + " --- |" * (len(victims) + 1)]
    for n in ns:
        qat = best_per_seed(rows, "qat", n)
        cells = []
        for v in victims:
            best = best_per_seed(rows, v, n)
            cells.append(pm(best[s] - qat[s] for s in sorted(best) if s in qat) if best and qat else "-")
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def thief_table(rows, ns=NS) -> str:
    thieves = sorted({r["thief"] for r in rows if r["victim"] != "baseline"})
    lines = ["| N | victim | " + " | ".join(thieves) + " |", "|" + " --- |" * (len(thieves) + 2)]
    for n in ns:
        for v in victims_of(rows):
            cells = [pm(r["accuracy"] for r in rows if (r["victim"], r["n"], r["thief"]) == (v, n, t)) for t in thieves]
            lines.append(f"| {n:,} | {shown(v)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


XLABEL = "in-distribution images the thief holds (N), + the digits pool, 10k queries"


def plot(rows, path: Path, ns=NS, xlabel=XLABEL) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [max(n, 30) for n in ns]  # N = 0 drawn at the left edge of a log axis
    for victim in [*victims_of(rows), "baseline"]:
        at, means, stds = [], [], []
        for x, n in zip(xs, ns, strict=True):
            values = list(best_per_seed(rows, victim, n).values()) or ([10.0] if n == 0 else [])  # N = 0: chance
            if values:  # a victim measured at only some N is drawn at those
                at.append(x)
                means.append(statistics.mean(values))
                stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        label = "no query: its N images' true labels" if victim == "baseline" else f"{shown(victim)} victim"
        style = "--" if victim == "baseline" else ":" if "+" in victim else "-"
        ax.errorbar(at, means, yerr=stds, marker="o", capsize=3, label=label, linestyle=style)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{n:,}" for n in ns])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("best thief's test accuracy, %")
    ax.set_title("What the victim gives an insider thief (3 seeds, mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def benign_costs(grid: Path, data_root, secret: Path) -> str:
    """What a benign client loses to each answer-side candidate, on the test set, per victim
    (3 seeds): accuracy, accuracy on benign-shifted test images and ECE (kept by construction:
    the top-1 and its probability are exact), top-2 accuracy (is the true class among the two largest answers?) and
    KL(victim || served)."""
    from divqat.blackbox import load_backend
    from divqat.defenses import create_defense
    from divqat.files import read_json

    test = load_splits("fashion-mnist", data_root).test
    shifted = benign_shifts(test.images)
    chains = {"none": None}
    for name in DEFENSES:
        defense, _, step = name.partition(":")
        params = {"secret_file": str(secret)} if defense == "scramble" else {}
        params["confidence_step"] = step or 0
        chains[shown_defense(name)] = create_defense(defense, params)
    measured: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for run in sorted(grid.glob("jobs/victim-*")):
        victim = "qat" if read_json(run / "metrics.json")["method"] == "qat" else "outlier"
        answer = load_backend(run, "onnx")
        clean, moved = answer(test.images), answer(shifted)
        for name, defense in chains.items():
            served = clean if defense is None else defense(clean, test.images)
            served_moved = moved if defense is None else defense(moved, shifted)
            top2 = (served.topk(2, -1).indices == test.labels[:, None]).any(-1).float().mean().item()
            measured.setdefault((victim, name), []).append((
                100 * metrics.accuracy(served, test.labels), 100 * metrics.accuracy(served_moved, test.labels),
                metrics.expected_calibration_error(served, test.labels), 100 * top2, metrics.mean_kl(clean, served),
            ))  # fmt: skip
    headers = ["victim", "answers", "accuracy %", "benign-shifted accuracy %", "ECE", "top-2 accuracy %",
               "KL(victim ‖ served)"]  # fmt: skip
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for (victim, name), values in sorted(measured.items()):
        acc, moved_acc, ece, top2, kl = zip(*values, strict=True)
        ece_pm = f"{statistics.mean(ece):.4f} ± {statistics.stdev(ece):.4f}"
        kl_mean = max(statistics.mean(kl), 0.0)  # rounding makes the undefended -0.000
        lines.append(
            f"| {VICTIMS[victim]} | {name} | {pm(acc)} | {pm(moved_acc)} | {ece_pm} | {pm(top2)} | {kl_mean:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/insiders"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=Path("docs/insiders.png"))
    parser.add_argument("--secret", type=Path, default=Path("runs/watermark.key"), help="scramble's, as in the grid")
    parser.add_argument("--ns", type=int, nargs="+", default=list(NS), help="the N the grid ran (default: all)")
    parser.add_argument("--xlabel", default=XLABEL, help="the plot's x axis: what the thief does with its N images")
    args = parser.parse_args()
    thieves = grid_results(args.grid)
    smoothings = {r["label_smoothing"] for r in thieves}
    rows = thieves + baselines(args.grid, args.seeds, args.data_root, args.ns, smoothings)
    print(table(rows, args.ns))
    print()
    print(deltas(rows, args.ns))
    print()
    print(thief_table(rows, args.ns))
    print()
    print(benign_costs(args.grid, args.data_root, args.secret))
    plot(rows, args.plot, args.ns, args.xlabel)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
