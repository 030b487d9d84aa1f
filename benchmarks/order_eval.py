"""The order test on a grid's own records: the clones stolen through `scramble`; undefended twins as innocents.

    python benchmarks/order_eval.py --grid runs/order

Each attack job behind `scramble` kept what its thief was told (`watermark.safetensors`: the
orders, defenses/orders.py) and verified its own clone from 1,000 queries (result.json's
`order_p_value`); this re-verifies it from the record, as `divqat verify SUSPECT --record FILE`
does, and verifies every undefended clone of the same victim (which never saw a scrambled order)
against each of those records. Prints, per victim and thief, the clones verified at p < 1e-6,
and the innocents flagged. Writes nothing.
"""

import argparse
import json
from pathlib import Path

import torch
from watermark_eval import answer_of, load_surrogate

from divqat.data import load_splits
from divqat.defenses.watermark import Record
from divqat.extraction import WATERMARK_RECORD
from divqat.verify import verify

SIGNIFICANCE = 1e-6


def grid_jobs(grid: Path, seeds: list[int] | None = None) -> list[dict]:
    """The grid's attack jobs (their result.json and directory), of these seeds only if given."""
    jobs = [json.loads(p.read_text()) | {"dir": p.parent} for p in sorted(grid.glob("jobs/attack-*/result.json"))]
    return [j for j in jobs if seeds is None or j["seed"] in seeds]


def suspect_of(job: dict, splits):
    return answer_of(load_surrogate(job["surrogate"], job["dir"], splits))


def thief(job: dict) -> str:
    pool = f"{job['pool']} + {job['in_seeds']} in-distribution" if job["in_seeds"] else job["pool"]
    adaptive = [
        f"drops answers below {job['confidence_tau']:g}" if job.get("confidence_tau") else "",
        f"mean of {job['smoothing']} augmented copies" if job.get("smoothing", 1) > 1 else "",
        f"asks twice (noise {job['consistency_noise']:g}), drops disagreements" if job.get("consistency_noise") else "",
    ]
    return ", ".join([job["attack"], pool, "top-1" if job["labels"] == "hard" else "soft", *filter(None, adaptive)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/order"))
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds' jobs (default: all)")
    args = parser.parse_args()
    splits = load_splits("fashion-mnist", args.data_root)
    jobs = grid_jobs(args.grid, args.seeds)
    marked = [j for j in jobs if j["defenses"] and (j["dir"] / WATERMARK_RECORD).exists()]
    plain = [j for j in jobs if not j["defenses"]]
    rows: dict[tuple, list] = {}
    flagged = tested = 0
    smallest = 1.0
    for job in marked:
        record = {"thief": Record.load(job["dir"] / WATERMARK_RECORD)}
        (own,) = verify(suspect_of(job, splits), record, significance=SIGNIFICANCE)["accounts"]
        victim = "QAT" if job["victim_method"] == "qat" else "outlier-aware"
        gap = 100 * (job["victim_accuracy"] - job["surrogate_accuracy"])
        row = (job["surrogate_accuracy"], gap, own["p_value"], own["stolen"])
        rows.setdefault((victim, thief(job)), []).append(row)
        for innocent in (j for j in plain if j["victim"] == job["victim"]):
            (verdict,) = verify(suspect_of(innocent, splits), record, significance=SIGNIFICANCE)["accounts"]
            flagged += verdict["stolen"]
            tested += 1
            smallest = min(smallest, verdict["p_value"])
    print(f"order test from 1,000 suspect queries, p < {SIGNIFICANCE:g}")
    print("| victim | thief | clone acc % | victim - clone (pp) | verified | p-values |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (victim, name), got in sorted(rows.items()):
        acc = torch.tensor([g[0] for g in got]) * 100
        print(f"| {victim} | {name} | {acc.mean():.1f} +- {acc.std():.1f} | {min(g[1] for g in got):.1f} .. "
              f"{max(g[1] for g in got):.1f} | {sum(g[3] for g in got)}/{len(got)} | "
              f"{min(g[2] for g in got):.1e} .. {max(g[2] for g in got):.1e} |")  # fmt: skip
    print(f"\nInnocents (the grid's undefended clones, each against every record of its victim): {flagged} of "
          f"{tested} verifications flagged, smallest p {smallest:.2g}.")  # fmt: skip


if __name__ == "__main__":
    main()
