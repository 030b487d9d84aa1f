"""Answer time of deployed victims: outlier-aware DivQAT costs nothing at inference.

    python benchmarks/answer_time.py RUN_DIR [RUN_DIR ...]     # e.g. a QAT and a DivQAT victim

Per victim: the ONNX graph's operators (the same for every method: training changes weights,
never the graph) and the median time per query of `BlackBoxVictim.query` through onnxruntime at
batch 1 (300 calls) and 256 (30 calls), interleaved across victims so that machine noise hits
all of them alike.
"""

import argparse
import statistics
import time
from collections import Counter
from pathlib import Path

import onnx
import torch

from divqat import artifacts
from divqat.blackbox import BlackBoxVictim, load_backend
from divqat.data import load_splits


def operators(run: Path) -> str:
    ops = Counter(n.op_type for n in onnx.load(run / artifacts.ONNX).graph.node)
    return ", ".join(f"{op} {n}" for op, n in sorted(ops.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    images = load_splits("fashion-mnist").test.images
    victims = {run: BlackBoxVictim(load_backend(run, "onnx"), 10**12) for run in args.runs}
    times = {(run, batch): [] for run in args.runs for batch in (1, 256)}
    for _ in range(args.rounds):
        for batch, calls in ((1, 60), (256, 6)):
            for run, victim in victims.items():
                x = images[:batch]
                victim.query(x)
                for _ in range(calls):
                    start = time.perf_counter()
                    victim.query(x)
                    times[run, batch].append((time.perf_counter() - start) / batch)
    print(f"threads: {torch.get_num_threads()}")
    print("| victim | method | batch 1: us/query | batch 256: us/query | ONNX operators |")
    print("| --- | --- | --- | --- | --- |")
    for run in args.runs:
        config, _ = artifacts.load_config(run)
        method = config.method + (f" beta {config.beta:g} ({config.outlier_loss})" if config.uses_outliers else "")
        t1, t256 = (1e6 * statistics.median(times[run, b]) for b in (1, 256))
        print(f"| {run.name} | {method} | {t1:.1f} | {t256:.2f} | {operators(run)} |")


if __name__ == "__main__":
    main()
