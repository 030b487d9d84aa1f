"""The watermark's benign cost per secret, and with a secret chosen on the owner's images (`divqat secret --victim`).

    python benchmarks/watermark_cost.py --grid runs/insiders --rate 0.005 --secrets 40 --chosen 12

Per victim of the grid (QAT and outlier-aware, 3 seeds each): the test-set cost (the fraction
of test images the victim answers right whose top-1 the watermark changes) of `--secrets`
random secrets, and of `--chosen` secrets each chosen as `divqat secret --victim` chooses them
(defenses/watermark_key.py: drawn until the cost on 20,000 of the victim's own training images
is at most rate x accuracy there). Secrets come from a seeded generator: the run repeats
exactly. Also the correlation between a random secret's cost on the owner's images and on the
test set. Writes nothing.
"""

import argparse
import json
import random
import statistics
from pathlib import Path

import torch
from scipy.stats import pearsonr

from divqat.blackbox import load_backend
from divqat.data import load_splits
from divqat.defenses.watermark_key import benign_cost, choose_secret

OWN = 20_000  # the owner's images: the first of the victim's training split, as `divqat secret` takes them


def answers(victim, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([victim(batch) for batch in images.split(2048)])


def pm(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.3f} +- {100 * statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/insiders"))
    parser.add_argument("--rate", type=float, default=0.005)
    parser.add_argument("--secrets", type=int, default=40)
    parser.add_argument("--chosen", type=int, default=12)
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    splits = load_splits("fashion-mnist", args.data_root)
    own, test = splits.victim_train, splits.test
    own_images, own_labels = own.images[:OWN], own.labels[:OWN]
    rows = {}
    for path in sorted(args.grid.glob("jobs/victim-*/config.json")):
        config = json.loads(path.read_text())
        kind = "QAT" if config["victim"]["method"] == "qat" else "outlier-aware"
        victim = load_backend(path.parent, "onnx")
        own_probs, test_probs = answers(victim, own_images), answers(victim, test.images)
        draw = random.Random(f"{path.parent.name} {args.rate}").randbytes
        pairs = []
        for _ in range(args.secrets):
            secret = draw(32)
            pairs.append((benign_cost(secret, args.rate, own_probs, own_images, own_labels),
                          benign_cost(secret, args.rate, test_probs, test.images, test.labels)))  # fmt: skip
        chosen, tried = [], []
        for _ in range(args.chosen):
            secret, _, attempts = choose_secret(args.rate, own_probs, own_images, own_labels, draw=draw)
            chosen.append(benign_cost(secret, args.rate, test_probs, test.images, test.labels))
            tried.append(attempts)
        got = rows.setdefault(kind, {"pairs": [], "chosen": [], "tried": []})
        got["pairs"] += pairs
        got["chosen"] += chosen
        got["tried"] += tried
    print(f"rate {100 * args.rate:g} %: test-set cost, pp (over the victims' secrets)")
    print("| victims | secrets | cost, random secret | max | <= rate | secrets chosen | cost, chosen | max | <= rate "
          "| drawn per choice | own vs test cost (Pearson) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, got in sorted(rows.items()):
        random_cost = [t for _, t in got["pairs"]]
        r = pearsonr([o for o, _ in got["pairs"]], random_cost).statistic
        print(f"| {kind} | {len(random_cost)} | {pm(random_cost)} | {100 * max(random_cost):.3f} | "
              f"{sum(c <= args.rate for c in random_cost)}/{len(random_cost)} | {len(got['chosen'])} | "
              f"{pm(got['chosen'])} | {100 * max(got['chosen']):.3f} | "
              f"{sum(c <= args.rate for c in got['chosen'])}/{len(got['chosen'])} | "
              f"{statistics.mean(got['tried']):.1f} | {r:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
