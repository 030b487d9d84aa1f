"""How strong a thief's distillation can be: one marked clone distilled again into LeNet-5 several
ways, each student's accuracy and both marks' p-values (docs/divqat.md, "Distilled again").

    python benchmarks/distill_strength.py --job runs/proof_many/jobs/victim-48884a95bad3049e-in-0-soft

The job is a clone of benchmarks/proof_stacked.py (its surrogate, record and result). Each
student is a fresh LeNet-5 trained 20 or 40 epochs on the clone's soft answers to 10,000 or
30,000 images drawn from the thief's own pool (augmented copies once the pool is used up), with
or without a random affine view of each image per epoch, and verified against the clone's record
as a suspect is (1,000 queries, p < 1e-6 over both tests). Measured on QAT seed 3's whole-split
soft clone (victim 88.7 %, clone 87.6 %, 71 marks), one thread, 1-3.5 min a student: augmented,
the wash benchmarks/watermark_eval.py used first (learning rate 1e-3) leaves its student 12.2 pp
below the victim, and at 3e-3 or 1e-2, 40 epochs or 30,000 images 3.8-6.5 pp, none keeping a
mark (p >= 0.07); not augmented, 1.6-2.1 pp below, the marks partly kept - at 3e-3 p 1e-2, at
1e-2 1e-6, 40 epochs at 3e-3 4e-7 (proven): the more faithfully the student copies the clone,
the more of the marks it copies too.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from watermark_eval import answer_of, distil, load_surrogate

from divqat.configs import AttackConfig
from divqat.data import load_splits
from divqat.defenses.watermark import Record
from divqat.extraction import thief_pool
from divqat.train import predict_proba
from divqat.verify import verify

# (images, epochs, learning rate, augmented): benchmarks/watermark_eval.py's wash first
STUDENTS = [(10_000, 20, 1e-3, True), (10_000, 20, 3e-3, True), (10_000, 40, 3e-3, True), (10_000, 20, 1e-2, True),
            (30_000, 20, 3e-3, True), (10_000, 20, 3e-3, False), (10_000, 40, 3e-3, False),
            (10_000, 20, 1e-2, False)]  # fmt: skip
ATTACK_FIELDS = ("attack", "budget", "surrogate", "epochs", "schedule", "pool", "in_seeds", "confidence_tau", "labels",
                 "seed")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True, help="a clone's job directory of proof_stacked.py")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = load_splits("fashion-mnist", args.data_root)
    result = json.loads((args.job / "result.json").read_text())
    config = AttackConfig(**{k: result[k] for k in ATTACK_FIELDS})
    pool = thief_pool(config, splits)
    record = Record.load(args.job / "record.safetensors")
    clone = load_surrogate(config.surrogate, args.job, splits)
    print(f"{args.job.name}: victim {100 * result['victim_accuracy']:.1f} %, clone "
          f"{100 * result['surrogate_accuracy']:.1f} %, {len(record)} marks, pool of {len(pool)}")  # fmt: skip
    print("| images | epochs | lr | augmented | student acc % | victim - student (pp) | watermark p | order p | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, epochs, lr, augmented in STUDENTS:
        start = time.perf_counter()
        student = distil(clone, pool, splits, config.seed, lr, augmented, epochs, n)
        accuracy = (predict_proba(student, splits.test.images).argmax(-1) == splits.test.labels).float().mean().item()
        verdicts = verify(answer_of(student), {"thief": record}, max_queries=1000)["accounts"]
        p = {v["test"]: v["p_value"] for v in verdicts}
        print(f"| {n:,} | {epochs} | {lr:g} | {'yes' if augmented else 'no'} | {100 * accuracy:.1f} | "
              f"{100 * (result['victim_accuracy'] - accuracy):.1f} | {p.get('watermark', 1):.1e} | "
              f"{p.get('order', 1):.1e} | {time.perf_counter() - start:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
