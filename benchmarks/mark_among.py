"""Marks among the victim's next guesses: does a student distilled from a top-1 clone keep a mark
drawn from the few classes the victim itself found next likeliest, where it loses one drawn from
all the others? A probe on the validation thief, not a defense yet (docs/divqat.md, "Marks
among the next guesses").

    python benchmarks/mark_among.py --grid runs/order --out runs/proof_among --seeds 0 1 2 --among 9 3 2

The watermark draws its mark uniformly from the K - 1 classes other than the victim's top-1: an
arbitrary class, which a clone memorises at the image itself and a student that sees only random
views of it loses ("Distilled again", "Asked in views"). Here the mark is drawn uniformly from
the `among` classes the victim's own answer ranks next (its probabilities before any defense,
ties by class index); among = K - 1 draws as the watermark does, uniformly over all the others
(from other bytes of the same HMAC: the same images marked, other marks). A mark next to the victim's answer
may extend over the image's views in the clone, and so reach its student; each mark carries less
evidence (uniform over `among` values, not K - 1). The test stays exact: the record keeps the
victim's own answer, which fixes each image's candidates, and the mark is uniform over them and
independent of any model that never saw it - the watermark's test (verify.mark_scores) with each
image's term uniform over its candidates' scores. A wrong answer's mark may also hit the true
class, which the next guesses hold more often: the benign cost is measured on the test set.

The thief: KnockoffNets (cnn, 10,000 top-1 queries, 10 epochs) on the owner's training images
20,000-30,000 - in distribution, neither the thief split nor the images the secrets were chosen
on (the first 20,000) - behind scramble and the watermark as proof_stacked.py serves them (rate
0.001, 20 % below 0.5, served at 0.9); its clone distilled into LeNet-5 on random views at
lr 1e-2 (watermark_eval.distil). Innocents: the grid's undefended twins against every record.

Measured on QAT seeds 0-2 (the command above, about 19 min on 2 threads): the students' p at
among 9 / 3 / 2: 5e-2 / 0.2 / 0.1, 6e-2 / 0.4 / 0.1, 1e-3 / 3e-3 / 5e-2 (2.9-5.1 pp below the
victim); every clone weaker too at fewer candidates (seed 0: 2e-34 / 6e-23 / 1e-14); benign
cost 0.23-0.37 pp, within its spread; innocents 0 of 18 at each. Each mark carries less evidence
and the students keep no more of it. Not adopted.
"""

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from proof_stacked import ATTACK, secrets_for
from torch import Tensor
from view_verify import twins_of, victims
from watermark_eval import distil, fresh_lenet5, load_surrogate

from divqat import artifacts
from divqat.blackbox import load_backend
from divqat.blackbox.victim import defend
from divqat.configs import AttackConfig
from divqat.data import load_splits
from divqat.defenses import create_defense
from divqat.defenses.watermark import Marks, Record, Watermark
from divqat.extraction import steal
from divqat.metrics import accuracy
from divqat.train import predict_proba
from divqat.verify import SCORE_STEP, mark_scores, score_sum_p_value

THIEF_IMAGES = slice(20_000, 30_000)  # of the owner's training split: the validation thief's pool
THRESHOLD = 1e-6


def candidates(own: Tensor, top1: Tensor, among: int) -> Tensor:
    """(n, among) the classes the victim's own answer ranks next after its top-1 (ties by index)."""
    rest = own.double().clone()
    rest[torch.arange(len(own)), top1] = -float("inf")
    return torch.sort(rest, dim=1, descending=True, stable=True).indices[:, :among]


@dataclass
class AmongWatermark(Watermark):
    """The watermark with each mark drawn among the victim's `among` next guesses (0: all)."""

    among: int = 0

    def select(self, probs: Tensor, images: Tensor, own: Tensor | None = None) -> Marks:
        marks = super().select(probs, images, own)
        if not self.among or not marks.selected.any():
            return marks
        picked = [d for d, c in zip(self._key.digests(images), marks.selected.tolist(), strict=True) if c]
        index = torch.tensor([int.from_bytes(d[16:24], "little") % self.among for d in picked])
        mark = candidates(marks.own, marks.top1, self.among)[torch.arange(len(index)), index]
        return dataclasses.replace(marks, mark=mark)


def p_value(model, told: dict[str, Tensor], among: int) -> float:
    """The watermark's test, each image's term uniform over its `among` candidates' scores: the
    scores of the candidates alone, after a column standing for the top-1 (which the test skips)."""
    answers = predict_proba(model, told["images"])
    scores = mark_scores(answers, told["natural"], told["top1"], told["confidence"])
    allowed = candidates(told["natural"], told["top1"], among)
    column = (allowed == told["mark"].unsqueeze(1)).long().argmax(1) + 1  # the mark's, among the candidates
    only = torch.cat([torch.zeros(len(scores), 1, dtype=scores.dtype), scores.gather(1, allowed)], 1)
    return score_sum_p_value(only, torch.zeros(len(scores), dtype=torch.long), column, SCORE_STEP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/order"))
    parser.add_argument("--out", type=Path, default=Path("runs/proof_among"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--among", type=int, nargs="+", default=[9, 3, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_splits("fashion-mnist")
    pool = splits.victim_train.images[THIEF_IMAGES]
    rows, records, innocents = [], {}, []
    for seed, victim_dir in victims(args.grid, args.seeds).items():
        victim = load_backend(victim_dir, "onnx")
        scramble_key, mark_key = secrets_for(victim_dir, victim, splits, 0.001, args.out)
        innocents += [load_surrogate("cnn", d, splits) for d in twins_of(args.grid, victim_dir)]
        victim_test = torch.cat([victim(b) for b in splits.test.images.split(2048)])
        for among in args.among:
            mark = AmongWatermark(rate=0.001, secret_file=str(mark_key), unsure_below=0.5, unsure_rate=0.2,
                                  mark_probability=0.9, among=among)  # fmt: skip
            defenses = (create_defense("scramble", {"secret_file": str(scramble_key)}), mark)
            served = defend(victim_test, splits.test.images, defenses)
            cost = accuracy(victim_test, splits.test.labels) - accuracy(served, splits.test.labels)
            job = args.out / "jobs" / f"{victim_dir.name}-among{among}"
            if not (job / "student.safetensors").is_file():
                config = AttackConfig(**ATTACK, pool="in", labels="hard", seed=seed)  # the pool: given below
                record = Record()
                clone, result = steal(victim, splits, config, defenses=defenses, pool=pool, record=record)
                job.mkdir(parents=True, exist_ok=True)
                artifacts.save_state(clone, job / "surrogate.safetensors")
                record.save(job / "record.safetensors")
                (job / "result.json").write_text(json.dumps(result, indent=2))
                artifacts.save_state(
                    distil(clone, pool, splits, seed, lr=1e-2, augment=True), job / "student.safetensors"
                )
            clone = load_surrogate("cnn", job, splits)
            student = artifacts.load_state(fresh_lenet5(splits, 0), job / "student.safetensors").eval()
            told = Record.load(job / "record.safetensors").tensors()
            records[seed, among] = told
            victim_accuracy = json.loads((job / "result.json").read_text())["victim_accuracy"]
            gaps = [100 * (victim_accuracy - accuracy(predict_proba(m, splits.test.images), splits.test.labels))
                    for m in (clone, student)]  # fmt: skip
            rows.append((seed, among, len(told["top1"]), 100 * cost, gaps[0], p_value(clone, told, among), gaps[1],
                         p_value(student, told, among)))  # fmt: skip
    print("| seed | among | marks | benign cost (pp) | victim - clone (pp) | clone p | victim - student (pp) "
          "| student p |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed, among, n, cost, clone_gap, clone_p, student_gap, student_p in rows:
        print(f"| {seed} | {among} | {n} | {cost:.2f} | {clone_gap:.1f} | {clone_p:.0e} | {student_gap:.1f} "
              f"| {student_p:.0e} |")  # fmt: skip
    for among in args.among:
        ps = [p_value(m, told, among) for (s, a), told in records.items() if a == among for m in innocents]
        print(
            f"innocents, among {among}: {sum(p < THRESHOLD for p in ps)} of {len(ps)} flagged, smallest p {min(ps):.1e}"
        )


if __name__ == "__main__":
    main()
