"""Added latency per query of each defense over the undefended int8 victim (ONNX in onnxruntime).

    python benchmarks/defense_latency.py --victim runs/sweep/seed0/qat

Median time of BlackBoxVictim.query at batch 1 and batch 256, per query, and its ratio to the
undefended victim. Defenses with a model (MAD, adaptive misinformation) are fitted first.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from divqat.blackbox import BlackBoxVictim, load_backend
from divqat.data import load_splits
from divqat.defenses import DEFENSES, create_defense


def per_query_seconds(victim: BlackBoxVictim, images: torch.Tensor, repeats: int) -> float:
    victim.query(images)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        victim.query(images)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victim", type=Path, default=Path("runs/sweep/seed0/qat"))
    args = parser.parse_args()
    splits = load_splits("fashion-mnist")
    backend = load_backend(args.victim, "onnx")
    rows = {}
    for name in ["none", *DEFENSES]:
        defenses = () if name == "none" else (create_defense(name, seed=0).fit(backend, splits),)
        victim = BlackBoxVictim(backend, 10**9, defenses)
        rows[name] = {
            batch: per_query_seconds(victim, splits.test.images[:batch], 300 if batch == 1 else 30)
            for batch in (1, 256)
        }
    print(f"threads: {torch.get_num_threads()}")
    print("| defense | batch 1: us/query | vs none | batch 256: us/query | vs none |")
    print("| --- | --- | --- | --- | --- |")
    for name, t in rows.items():
        base = rows["none"]
        print(f"| {name} | {1e6 * t[1]:.1f} | {t[1] / base[1]:.2f}x | {1e6 * t[256]:.2f} | {t[256] / base[256]:.2f}x |")


if __name__ == "__main__":
    main()
