"""Issue 18's guards beside its thief, per victim of a grid: what a benign client keeps and what
the thief reaches.

    divqat run configs/views.yaml --out runs/views --jobs 2
    python benchmarks/benign_guard.py --grid runs/views

Per victim (the config's name, by seed): accuracy, accuracy on benign-shifted images (rotated up
to 10 degrees, shifted up to 7 %, scaled 0.9-1.1, half mirrored, contrast 0.8-1.2:
data/augment.py benign_shifts) and expected calibration error, on the thief's split by default - the
victim never trained on it and it is not the test set, so a direction can be read on it without
touching the final table's images (`--split test` for that table) - and each of the grid's
thieves' test accuracy (result.json). Writes nothing.
"""

import argparse
import json
from pathlib import Path

from insider_gain import pm

from divqat import metrics
from divqat.blackbox import load_backend
from divqat.data import load_splits
from divqat.data.augment import benign_shifts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/views"))
    parser.add_argument("--split", choices=("thief", "test"), default="thief")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    splits = load_splits("fashion-mnist", args.data_root)
    images = splits.thief_pool if args.split == "thief" else splits.test
    shifted = benign_shifts(images.images)
    names = {e["directory"]: e["labels"] for e in json.loads((args.grid / "index.json").read_text())}
    thieves: dict[str, dict[str, float]] = {}
    for path in sorted(args.grid.glob("jobs/attack-*/result.json")):
        r = json.loads(path.read_text())
        behind = "".join(f" + {d['name']}" for d in r["defenses"])
        thief = f"{r['pool']} {r['in_seeds']}, {'top-1' if r['labels'] == 'hard' else 'soft'}{behind}"
        thieves.setdefault(Path(r["victim"]).name, {})[thief] = 100 * r["surrogate_accuracy"]
    print(f"on the {args.split} split ({len(images.labels):,} images); thieves: test accuracy %")
    summary: dict[str, dict[str, dict[int, float]]] = {}  # victim -> column -> seed -> value
    for run in sorted(args.grid.glob("jobs/victim-*")):
        if run.name not in names:  # copied in from another grid, not this config's
            continue
        answer = load_backend(run, "onnx")
        clean, moved = answer(images.images), answer(shifted)
        measured = {
            "accuracy %": 100 * metrics.accuracy(clean, images.labels),
            "benign-shifted accuracy %": 100 * metrics.accuracy(moved, images.labels),
            "ECE x 100": 100 * metrics.expected_calibration_error(clean, images.labels),
            **thieves.get(run.name, {}),
        }
        print(f"{names[run.name]['victim']}, seed {names[run.name]['seed']}: "
              + ", ".join(f"{k} {v:.2f}" for k, v in measured.items()))  # fmt: skip
        for name, value in measured.items():
            summary.setdefault(names[run.name]["victim"], {}).setdefault(name, {})[names[run.name]["seed"]] = value
    columns = list(dict.fromkeys(name for values in summary.values() for name in values))
    print("\n| victim | seeds | " + " | ".join(columns) + " |")
    print("|" + " --- |" * (len(columns) + 2))
    for victim, values in summary.items():
        cells = [pm(values.get(c, {}).values()) for c in columns]
        print(f"| {victim} | {len(values['accuracy %'])} | " + " | ".join(cells) + " |")
    base = summary.get("qat", {})
    for victim, values in summary.items():  # paired by seed
        if victim != "qat" and base:
            cells = [pm(v - base[c][seed] for seed, v in values.get(c, {}).items() if seed in base.get(c, {}))
                     for c in columns]  # fmt: skip
            print(f"| {victim} - qat | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
