"""What a victim gives a thief who holds N in-distribution images, beyond those images alone.

    divqat run configs/insiders.yaml --out runs/insiders --jobs 2
    python benchmarks/insider_gain.py --grid runs/insiders

The grid's thieves query the victim; this script adds, per N and seed, the no-query baseline:
the same thief (its AttackConfig: surrogate, epochs, schedule, batch, augmentation) trained on
those N images with their true labels and no query at all - the same N images the grid's thief
of that seed mixed into its pool (`with_in_distribution`), drawn up to the same 10,000 training
samples with augmented copies (`augmented_sample`, as the thief's pool is drawn). The gain of a
victim at N: its best thief minus the best baseline, paired by seed. Baselines are written to
GRID/baseline/N-SEED-AUG.json (resumable); the table goes to stdout as markdown, the plot to
docs/insiders.png. Threads: one per process, as each grid job has under --jobs 2.
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
from divqat.data.augment import augmented_sample
from divqat.train import predict_proba

WHOLE = 10_000  # Fashion-MNIST's thief split, all of it: the grid's pool `in`
NS = (0, 100, 300, 1000, 3000, WHOLE)
VICTIMS = {"qat": "QAT", "outlier": "outlier-aware"}


def grid_results(grid: Path) -> list[dict]:
    rows = []
    for path in sorted(grid.glob("jobs/attack-*/result.json")):
        r = json.loads(path.read_text())
        n = WHOLE if r["pool"] == "in" else r["in_seeds"]
        victim = "qat" if r["victim_method"] == "qat" else "outlier"
        rows.append({"victim": victim, "n": n, "seed": r["seed"], "thief": thief_name(r),
                     "accuracy": 100 * r["surrogate_accuracy"]})  # fmt: skip
    return rows


def thief_name(r: dict) -> str:
    return {"soft": "soft", "hard": "top-1"}[r["labels"]] + (" + augment" if r["augment"] else "")


def baseline(splits, n: int, seed: int, augment: bool) -> float:
    """The grid thief's recipe on n true-labelled images of its own split, no query."""
    torch.set_num_threads(1)
    config = AttackConfig(attack="knockoff", budget=10_000, surrogate="cnn", epochs=10, schedule="constant",
                          augment=augment, seed=seed)  # fmt: skip
    split = splits.thief_pool
    chosen = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]  # = with_in_distribution
    images, labels = split.images[chosen], split.labels[chosen]
    generator = torch.Generator().manual_seed(seed)
    index, inputs = augmented_sample(images, config.budget, generator)
    targets = torch.nn.functional.one_hot(labels[index], splits.num_classes).float()
    thief = Thief(config, None, splits.input_shape, splits.num_classes, generator)
    model = thief.train_surrogate(inputs, targets)
    return 100 * metrics.accuracy(predict_proba(model, splits.test.images), splits.test.labels)


def baselines(grid: Path, seeds, data_root) -> list[dict]:
    out = grid / "baseline"
    out.mkdir(exist_ok=True)
    splits = None
    rows = []
    for n in (n for n in NS if n):
        for seed in seeds:
            for augment in (False, True):
                path = out / f"{n}-{seed}-{int(augment)}.json"
                if not path.is_file():
                    splits = splits or load_splits("fashion-mnist", data_root)
                    accuracy = baseline(splits, n, seed, augment)
                    path.write_text(json.dumps({"n": n, "seed": seed, "augment": augment, "accuracy": accuracy}))
                    print(f"baseline N={n} seed={seed} augment={augment}: {accuracy:.2f}", flush=True)
                r = json.loads(path.read_text())
                thief = "true labels" + (" + augment" if augment else "")
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
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def table(rows) -> str:
    headers = ["N", "no-query baseline", "QAT: best thief", "QAT: gain", "outlier-aware: best thief",
               "outlier-aware: gain", "outlier-aware - QAT"]  # fmt: skip
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for n in NS:
        base = best_per_seed(rows, "baseline", n)
        cells = [f"{n:,}" + (" (whole split)" if n == WHOLE else ""), pm(base.values()) if base else "10.0 (chance)"]
        best = {v: best_per_seed(rows, v, n) for v in VICTIMS}
        for v in VICTIMS:
            seeds = sorted(best[v])
            cells.append(pm(best[v].values()))
            cells.append(pm(best[v][s] - base.get(s, 10.0) for s in seeds))
        cells.append(pm(best["outlier"][s] - best["qat"][s] for s in sorted(best["qat"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def thief_table(rows) -> str:
    thieves = sorted({r["thief"] for r in rows if r["victim"] != "baseline"})
    lines = ["| N | victim | " + " | ".join(thieves) + " |", "|" + " --- |" * (len(thieves) + 2)]
    for n in NS:
        for v, name in VICTIMS.items():
            cells = [pm(r["accuracy"] for r in rows if (r["victim"], r["n"], r["thief"]) == (v, n, t)) for t in thieves]
            lines.append(f"| {n:,} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = [max(n, 30) for n in NS]  # N = 0 drawn at the left edge of a log axis
    for victim, label in (("qat", "QAT victim"), ("outlier", "outlier-aware DivQAT victim"), ("baseline", None)):
        means, stds = [], []
        for n in NS:
            values = list(best_per_seed(rows, victim, n).values()) or [10.0]
            means.append(statistics.mean(values))
            stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        label = label or "no query: its N images' true labels"
        style = "--" if victim == "baseline" else "-"
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label, linestyle=style)
    ax.set_xscale("log")
    ax.set_xticks(xs, ["0"] + [f"{n:,}" for n in NS[1:]])
    ax.set_xlabel("in-distribution images the thief holds (N), + the digits pool, 10k queries")
    ax.set_ylabel("best thief's test accuracy, %")
    ax.set_title("What the victim gives an insider thief (3 seeds, mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/insiders"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=Path("docs/insiders.png"))
    args = parser.parse_args()
    rows = grid_results(args.grid) + baselines(args.grid, args.seeds, args.data_root)
    print(table(rows))
    print()
    print(thief_table(rows))
    plot(rows, args.plot)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
