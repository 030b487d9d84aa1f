"""Which of a record's images the order test asks: the candidate rules compared on a grid's records.

    divqat run configs/order_validation.yaml --out runs/order_validation --jobs 2
    python benchmarks/order_rows.py --grid runs/order_validation

For every clone stolen through `scramble` (an attack job with a record), its answers on all of
its record's images, then each candidate's 1,000 rows tested (verify_order.correlations,
p_value): the record's first 1,000; the rows of most mass past the top-1 from 1, 2, 4 or 8
equal strata of the served top-1's probability, in one sum (1 stratum: the rule before this
benchmark); the same 1,000 of most mass with the answers as log-probabilities or square roots;
from 2, 3, 4 or 6 strata, the smallest p-value of each stratum (and of all), Bonferroni - a
thief that kept only its confident answers carries the order only on those; and the sequential
test (verify_order.Sequential: 2, 4 or 8 strata, asked from the most mass down or spread, a
first round of 20 or 40 % of the 1,000, the later rounds where the clone has shown the order,
each row bet on), which sees a row's answer only once it has chosen to ask it. Every rule's
choice of rows reads only the top-1's probability, which `scramble` serves exactly, and the
answers to rows asked before, so under the null each is as valid as the others; the undefended
twins are tested against every record of their victim to show it. Prints per rule and thief the
clones verified at p < 1e-6, the largest p and the sum of -log10 p. Writes nothing. Chosen a
priori: the most clones verified, then the largest sum. The rule is chosen on
configs/order_validation.yaml's thieves (its pool is not the digits, its filters not 0.5); the
winner, and only it beside the fixed rule, is then run on the evaluation grids (the first stop's
winner, the 2 strata's smallest p, was not taken; the second's, the sequential test with 8
strata and a first round of 20 %, is `divqat verify`'s):

    divqat run configs/sequential.yaml --out runs/order --jobs 2
    python benchmarks/order_rows.py --grid runs/order --rules "most mass, 1 strata, pooled" \
        "sequential, 8 strata, explore 0.2"
"""

import argparse
import math
from pathlib import Path

import torch
from order_eval import grid_jobs, suspect_of, thief

from divqat.data import load_splits
from divqat.defenses.watermark import Record
from divqat.extraction import WATERMARK_RECORD
from divqat.verify_order import (
    Sequential,
    asked_strata,
    correlations,
    most_informative,
    p_value,
    sequential_test,
    stratified_p_value,
)

SIGNIFICANCE = 1e-6
ASKED = 1000


def log(p: torch.Tensor) -> torch.Tensor:
    return p.clamp_min(1e-12).log()


def same(p: torch.Tensor) -> torch.Tensor:
    return p


def pooled(strata: int, form=same, served_form=same):
    """One p-value over the rows of `strata` strata; answers (and served ones) in that form. Any
    form keeps the null: the served values are still a uniform permutation among the classes."""

    def test(answers, told):
        rows = most_informative(told["served"], ASKED, strata)
        r = correlations(form(answers[rows]), form(told["natural"][rows]), served_form(told["served"][rows]))
        return p_value(r, told["served"].shape[1])

    return test


def smallest(strata: int, with_all: bool):
    """The smallest p-value of each stratum's rows (and all of them), Bonferroni."""

    def test(answers, told):
        parts = [correlations(answers[g], told["natural"][g], told["served"][g])
                 for g in asked_strata(told["served"], ASKED, strata)]  # fmt: skip
        classes = told["served"].shape[1]
        if with_all:
            return stratified_p_value(parts, classes)
        return min(1.0, len(parts) * min(p_value(r, classes) for r in parts))

    return test


def first(answers, told):
    rows = torch.arange(min(ASKED, len(told["served"])))
    return p_value(correlations(answers[rows], told["natural"][rows], told["served"][rows]), told["served"].shape[1])


def sequential(strata: int, spread: bool, explore: float, first_spread: bool = False):
    """Asked in rounds, the later ones where the clone has shown the order so far, and bet on
    (verify_order.Sequential): each round asks only rows it chose before seeing their answers."""
    plan = Sequential(strata=strata, spread=spread, explore=explore, first_spread=first_spread)

    def test(answers, told):
        return sequential_test(lambda rows: answers[rows], told, ASKED, plan).p_value

    return test


RULES = {
    "first 1,000": first,
    **{f"most mass, {k} strata, pooled": pooled(k) for k in (1, 2, 4, 8)},
    "most mass, suspect and victim as log-probabilities": pooled(1, log),
    "most mass, all three as log-probabilities": pooled(1, log, log),
    "most mass, all three as square roots": pooled(1, torch.sqrt, torch.sqrt),
    **{f"most mass, {k} strata, the smallest p of each": smallest(k, False) for k in (2, 3, 4, 6)},
    **{f"most mass, {k} strata, the smallest p of each and all": smallest(k, True) for k in (2, 3, 4, 6)},
    **{
        f"sequential, {k} strata{', spread' if spread else ''}, explore {e:g}": sequential(k, spread, e)
        for k in (2, 4, 8)
        for spread in (False, True)
        for e in (0.2, 0.4)
    },
    # after the evaluation grid's seeds 0-2 showed a first round that reads only each stratum's
    # edge of most mass (docs/divqat.md, "Asked in rounds"): that round spread, the rest by mass
    **{f"sequential, {k} strata, first round spread, explore 0.2": sequential(k, False, 0.2, True) for k in (4, 8)},
}


def p_values(answers: torch.Tensor, told: dict) -> dict[str, float]:
    """Each rule's p-value from the suspect's answers on every row of the record."""
    return {name: test(answers, told) for name, test in RULES.items()}


BANDS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01))


def bands(answers: torch.Tensor, told: dict) -> str:
    """The mean r over every recorded row, by the served top-1's probability (where does a clone
    carry the order?)."""
    top = told["served"].max(1).values
    cells = []
    for low, high in BANDS:
        rows = (top >= low) & (top < high)
        r = correlations(answers[rows], told["natural"][rows], told["served"][rows])
        cells.append(f"{float(r.mean()) if len(r) else 0.0:.3f} ({int(rows.sum())})")
    return " | ".join(cells)


def answers_on(answer, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([answer(batch) for batch in images.split(512)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/order_validation"))
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds' jobs (default: all)")
    parser.add_argument("--bands", action="store_true", help="also the mean r per band of the top-1's probability")
    parser.add_argument("--rules", nargs="+", choices=sorted(RULES), help="only these candidates (default: all)")
    args = parser.parse_args()
    for name in set(RULES) - set(args.rules or RULES):
        del RULES[name]
    splits = load_splits("fashion-mnist", args.data_root)
    jobs = grid_jobs(args.grid, args.seeds)
    marked = [j for j in jobs if j["defenses"] and (j["dir"] / WATERMARK_RECORD).exists()]
    plain = [j for j in jobs if not j["defenses"]]
    clones: dict[str, list[dict[str, float]]] = {}
    innocent: list[dict[str, float]] = []
    where: list[str] = []
    for job in marked:
        told = Record.load(job["dir"] / WATERMARK_RECORD).orders.tensors()
        victim = "QAT" if job["victim_method"] == "qat" else "outlier-aware"
        own = answers_on(suspect_of(job, splits), told["images"])
        clones.setdefault(f"{victim}, {thief(job)}", []).append(p_values(own, told))
        if args.bands:
            where.append(f"| {victim}, {thief(job)} | {job['seed']} | {bands(own, told)} |")
        for twin in (j for j in plain if j["victim"] == job["victim"]):
            innocent.append(p_values(answers_on(suspect_of(twin, splits), told["images"]), told))
    print(f"order test from {ASKED:,} rows of each record, p < {SIGNIFICANCE:g}: verified / clones (largest p)")
    print("| rule | " + " | ".join(clones) + " | all clones | sum of -log10 p | innocents flagged |")
    print("|" + " --- |" * (len(clones) + 4))
    for rule in RULES:
        cells, every = [], []
        for ps in clones.values():
            got = [p[rule] for p in ps]
            every += got
            cells.append(f"{sum(p < SIGNIFICANCE for p in got)}/{len(got)} ({max(got):.0e})")
        strength = sum(-math.log10(max(p, 1e-300)) for p in every)
        flagged = sum(p[rule] < SIGNIFICANCE for p in innocent)
        smallest = min((p[rule] for p in innocent), default=1.0)
        print(f"| {rule} | " + " | ".join(cells) + f" | {sum(p < SIGNIFICANCE for p in every)}/{len(every)} | "
              f"{strength:.0f} | {flagged}/{len(innocent)} (smallest p {smallest:.2g}) |")  # fmt: skip
    if where:
        print("\nmean r (rows) of every recorded image, by the served top-1's probability")
        heads = [f"[{lo:g}, {hi:g})" if hi < 1 else f"[{lo:g}, 1]" for lo, hi in BANDS]
        print("| clone | seed | " + " | ".join(heads) + " |")
        print("|" + " --- |" * (len(BANDS) + 2))
        print("\n".join(sorted(where)))


if __name__ == "__main__":
    main()
