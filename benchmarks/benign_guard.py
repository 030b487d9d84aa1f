"""Issue 18's guards beside its thief, per victim of a grid: what a benign client keeps and what
the thief reaches.

    divqat run configs/views.yaml --out runs/views --jobs 2
    python benchmarks/benign_guard.py --grid runs/views

Per victim (the config's name, by seed): accuracy, accuracy on benign-shifted images (rotated up
to 10 degrees, shifted up to 7 %, scaled 0.9-1.1, half mirrored, contrast 0.8-1.2:
insider_gain.benign_shifts) and expected calibration error, on the thief's split by default - the
victim never trained on it and it is not the test set, so a direction can be read on it without
touching the final table's images (`--split test` for that table) - and each of the grid's
thieves' test accuracy (result.json). Writes nothing.
"""

import argparse
import json
from pathlib import Path

from insider_gain import benign_shifts

from divqat import metrics
from divqat.blackbox import load_backend
from divqat.data import load_splits


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
    thieves: dict[str, list[str]] = {}
    for path in sorted(args.grid.glob("jobs/attack-*/result.json")):
        r = json.loads(path.read_text())
        behind = "".join(f" + {d['name']}" for d in r["defenses"])
        thief = f"{r['pool']} {r['in_seeds']}, {'top-1' if r['labels'] == 'hard' else 'soft'}{behind}"
        thieves.setdefault(Path(r["victim"]).name, []).append(f"{thief} {100 * r['surrogate_accuracy']:.1f}")
    print(f"on the {args.split} split ({len(images.labels):,} images); thieves: test accuracy %")
    print("| victim | seed | accuracy % | benign-shifted accuracy % | ECE | thieves |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in sorted(args.grid.glob("jobs/victim-*")):
        labels = names[run.name]
        answer = load_backend(run, "onnx")
        clean, moved = answer(images.images), answer(shifted)
        print(f"| {labels['victim']} | {labels['seed']} | {100 * metrics.accuracy(clean, images.labels):.2f} | "
              f"{100 * metrics.accuracy(moved, images.labels):.2f} | "
              f"{metrics.expected_calibration_error(clean, images.labels):.4f} | "
              f"{'; '.join(thieves.get(run.name, []))} |")  # fmt: skip


if __name__ == "__main__":
    main()
