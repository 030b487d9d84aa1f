"""Aggregate benchmarks/sweep_alpha.py runs into the Markdown table of docs/divqat.md.

    python benchmarks/table_alpha.py runs/sweep > docs/divqat-table.md

Each row: mean +- std over seeds of int8 accuracy and KL(f_fp || f_int8), the accuracy change
against QAT of the same seed (paired), and KL as a multiple of QAT's.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    m = statistics.mean(values) * scale
    s = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{m:.{digits}f} +- {s:.{digits}f}"


def load(root: Path) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    for path in sorted(root.glob("seed*/*/metrics.json")):
        m = json.loads(path.read_text())
        runs[path.parent.name][m["seed"]] = m
    return runs


def rows(runs: dict[str, dict[int, dict]]):
    qat = runs["qat"]
    order = ["fp", "ptq", "qat"] + sorted(k for k in runs if k not in ("fp", "ptq", "qat"))
    for name in order:
        seeds = sorted(s for s in runs.get(name, {}) if s in qat)
        if not seeds:
            continue
        got = [runs[name][s] for s in seeds]
        acc = [m["int8_accuracy"] if m["int8_accuracy"] is not None else m["deployed_accuracy"] for m in got]
        delta = [a - qat[s]["int8_accuracy"] for a, s in zip(acc, seeds, strict=True)]
        kl = [m["kl_fp_int8"] for m in got if m["kl_fp_int8"] is not None]
        ratio = [m["kl_fp_int8"] / qat[s]["kl_fp_int8"] for m, s in zip(got, seeds, strict=True) if m["kl_fp_int8"]]
        yield {
            "name": name,
            "seeds": len(seeds),
            "accuracy": mean_std(acc, 100),
            "delta": mean_std(delta, 100),
            "kl": mean_std(kl, 1, 4) if kl else "-",
            "ratio": f"{statistics.mean(ratio):.1f}x" if ratio else "-",
            "max_prob": mean_std([m["mean_max_prob"] for m in got], 1, 3),
            "within_1pp": statistics.mean(delta) >= -0.01,
            "mean_kl": statistics.mean(kl) if kl else 0.0,
        }


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sweep")
    table = list(rows(load(root)))
    print("| victim | seeds | int8 accuracy % | vs QAT (pp) | KL(f_fp ‖ f_int8) | KL / QAT | mean max prob |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in table:
        cells = [r[k] for k in ("name", "seeds", "accuracy", "delta", "kl", "ratio", "max_prob")]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print()
    for form in ("paper-kl", "kl-floor", "kl-hinge", "js", "nt-js"):
        ok = [r for r in table if r["name"].startswith(form + "-a") and r["within_1pp"]]
        if ok:
            best = max(ok, key=lambda r: r["mean_kl"])
            print(f"- {form}: largest KL within 1 pp of QAT at `{best['name']}` ({best['ratio']} QAT's KL)")


if __name__ == "__main__":
    main()
