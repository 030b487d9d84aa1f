"""Aggregate benchmarks/attack_grid.py (or defense_grid.py) results into Markdown tables.

python benchmarks/table_attacks.py runs/attacks
python benchmarks/table_attacks.py runs/defenses --defenses
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def pm(values: list[float]) -> str:
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * s:.1f}"


def load(root: Path) -> dict[tuple[str, str], list[dict]]:
    """(victim, setting) -> results over seeds."""
    runs = defaultdict(list)
    for path in sorted(root.glob("*/seed*/*/result.json")):
        runs[(path.parts[-4], path.parts[-2])].append(json.loads(path.read_text()))
    return runs


def attack_table(runs) -> None:
    victims = sorted({v for v, _ in runs}, key=lambda v: (v != "qat", v))
    settings = sorted({s for _, s in runs})
    print("| attack | " + " | ".join(f"{v}: thief acc % / fidelity %" for v in victims) + " |")
    print("| --- |" + " --- |" * len(victims))
    for s in settings:
        cells = []
        for v in victims:
            got = runs.get((v, s), [])
            cells.append(
                f"{pm([r['surrogate_accuracy'] for r in got])} / {pm([r['fidelity'] for r in got])} (n={len(got)})"
                if got
                else "-"
            )
        print(f"| {s} | " + " | ".join(cells) + " |")
    print()
    print(
        "Victim accuracy %: "
        + ", ".join(
            f"{v} {pm([r['victim_accuracy'] for (vv, _), rs in runs.items() if vv == v for r in rs])}" for v in victims
        )
    )  # noqa: E501
    print()
    for budget in (1000, 5000, 10000):
        soft, hard = f"knockoff-ood-{budget}-soft", f"knockoff-ood-{budget}-hard"
        line = []
        for v in victims:
            pairs = {r["seed"]: r["surrogate_accuracy"] for r in runs.get((v, soft), [])}
            pairs_h = {r["seed"]: r["surrogate_accuracy"] for r in runs.get((v, hard), [])}
            seeds = sorted(set(pairs) & set(pairs_h))
            if seeds:
                line.append(f"{v} {pm([max(pairs[s], pairs_h[s]) for s in seeds])}")
        print(
            f"- Effective KnockoffNets (ood) thief at {budget} (better of soft and top-1, per seed): " + "; ".join(line)
        )


def defense_table(runs) -> None:
    print("| victim | defense | defender acc % | thief acc % | mean L1 | seeds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (v, s), got in sorted(runs.items(), key=lambda kv: (kv[0][0] != "qat", kv[0])):
        defender, thief = pm([r["defended_accuracy"] for r in got]), pm([r["surrogate_accuracy"] for r in got])
        l1 = statistics.mean(r["defense_l1"] for r in got)
        print(f"| {v} | {s} | {defender} | {thief} | {l1:.3f} | {len(got)} |")


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/attacks")
    (defense_table if "--defenses" in sys.argv else attack_table)(load(root))
