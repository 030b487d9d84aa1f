"""Where an insider thief's gain comes from: the answers on its own images, or on the digits?

    divqat run configs/confidence.yaml --out runs/confidence --jobs 2
    python benchmarks/insider_sources.py --grid runs/confidence

The grid's insider thief (N = 500) spends its 10,000 queries on the digits pool with its 500
images mixed in: about 2,200 of its queries are (augmented copies of) its own images, the rest
digits. This thief (pool `own`) spends all 10,000 on its own 500 images - each asked once, then
as augmented copies (rotated up to 15 degrees, shifted up to 10 %, scaled 0.85-1.15), as any
thief samples its pool - with the grid thief's recipe otherwise (cnn, 10 epochs, ART's constant
rate, its seed, the same 500 images). Run against every victim of the grid, with soft answers,
top-1 answers and soft answers behind `flatten`; its gain is over the grid's best no-query
baseline (benchmarks/insider_gain.py: the same 500 images' true labels, the same 10,000 draws,
plain, augmented or label-smoothed), paired by seed. It says how much of the gain is the
victim's answers on augmented views of images the thief already holds - views much like the
benign shifts a victim must keep answering well. Results go to
GRID/sources/VICTIM-LABELS[-DEFENSE].json (resumable); the table to stdout. Two processes, one
thread each, as the grid's jobs under --jobs 2.
"""

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from insider_gain import baselines, best_per_seed, grid_results, pm

from divqat.blackbox import load_backend
from divqat.configs import AttackConfig
from divqat.data import load_splits
from divqat.defenses import create_defense
from divqat.extraction import steal
from divqat.files import read_json

N = 500
SEEDS = (0, 1, 2)
THIEVES = (("soft", None), ("hard", None), ("soft", "flatten"))


def own_images_thief(task: tuple[str, str, str | None, Path, Path | None]) -> dict:
    victim_dir, labels, defense, out, data_root = task
    torch.set_num_threads(1)
    metrics = read_json(Path(victim_dir) / "metrics.json")
    seed = metrics["seed"]
    splits = load_splits("fashion-mnist", data_root)
    # pool `own`: nothing but the grid thief's 500 in-distribution images (`in_distribution_seeds`)
    config = AttackConfig(attack="knockoff", pool="own", in_seeds=N, budget=10_000, surrogate="cnn", epochs=10,
                          schedule="constant", labels=labels, seed=seed)  # fmt: skip
    defenses = (create_defense(defense, {}),) if defense else ()
    _, measured = steal(load_backend(Path(victim_dir), "onnx"), splits, config, defenses=defenses)
    row = {"victim": "qat" if metrics["method"] == "qat" else "outlier", "seed": seed, "labels": labels,
           "defense": defense or "none", "accuracy": 100 * measured["surrogate_accuracy"]}  # fmt: skip
    out.write_text(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/confidence"))
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out = args.grid / "sources"
    out.mkdir(exist_ok=True)
    tasks = []
    for victim in sorted(args.grid.glob("jobs/victim-*")):
        for labels, defense in THIEVES:
            path = out / (f"{victim.name}-{labels}" + (f"-{defense}" if defense else "") + ".json")
            if not path.is_file():
                tasks.append((str(victim), labels, defense, path, args.data_root))
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(own_images_thief, tasks):
            print(f"{row['victim']} seed {row['seed']} {row['labels']} behind {row['defense']}: {row['accuracy']:.2f}")
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    smoothings = {r["label_smoothing"] for r in grid_results(args.grid)}
    base = best_per_seed(baselines(args.grid, SEEDS, args.data_root, [N], smoothings), "baseline", N)
    print(f"\nThe thief that asks only about its own {N} images (10,000 queries), test accuracy % (gain over the")
    print(f"best no-query baseline of the grid, {pm(base.values())}), 3 seeds:")
    print("| victim | soft | top-1 | soft behind flatten |\n| --- | --- | --- | --- |")
    for victim, shown in (("qat", "QAT"), ("outlier", "outlier-aware")):
        cells = []
        for labels, defense in THIEVES:
            key = (victim, labels, defense or "none")
            got = {r["seed"]: r["accuracy"] for r in rows if (r["victim"], r["labels"], r["defense"]) == key}
            cells.append(f"{pm(got.values())} ({pm(got[s] - base[s] for s in sorted(got))})")
        print(f"| {shown} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
