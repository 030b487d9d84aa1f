"""`divqat report`: tables (mean +- std over seeds) and plots from a results directory.

Writes report.md and report.html beside the PNG plots: victim and surrogate error against
alpha; defender against attacker accuracy per defense, QAT versus DivQAT; defense latency.
"""

import html
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from divqat.artifacts import METRICS, read_json  # noqa: E402
from divqat.errors import DivqatError  # noqa: E402
from divqat.experiments.runner import INDEX, RESULT  # noqa: E402


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |", "|" + " --- |" * len(self.headers)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f"<h3>{html.escape(self.title)}</h3><table><tr>{head}</tr>{body}</table>"


def pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    s = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * scale:.{digits}f} +- {s:.{digits}f}"


def collect(out: Path) -> list[dict]:
    """Every finished job: its labels merged with its measurements."""
    if not (out / INDEX).is_file():
        raise DivqatError(f"{out} is not a results directory (no {INDEX}); run `divqat run CONFIG --out {out}` first")
    rows = []
    for entry in json.loads((out / INDEX).read_text()):
        path = out / "jobs" / entry["directory"] / (RESULT if entry["level"] == "attack" else METRICS)
        if path.is_file():
            rows.append({**read_json(path), **entry["labels"], "level": entry["level"]})
    return rows


def group(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in keys)].append(r)
    return groups


SETTING = ("attack", "pool", "budget", "labels")


def defense_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Defended attacks, and the undefended runs of exactly the attack settings they used."""
    defended = [r for r in rows if r["level"] == "attack" and r.get("kind") == "defense"]
    settings = {tuple(r[k] for k in SETTING) for r in defended}
    plain = [r for r in rows if r["level"] == "attack" and r["defense"] == "none"
             and tuple(r[k] for k in SETTING) in settings]  # fmt: skip
    return defended, plain


def save(fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def victim_order(name: str) -> tuple:
    return (name != "fp", name != "qat", name)


def victims_table(rows: list[dict]) -> Table:
    victims = [r for r in rows if r["level"] in ("fp", "victim")]
    qat = {r["seed"]: r for r in victims if r["victim"] == "qat"}
    out = []
    for (name,), got in sorted(group(victims, "victim").items(), key=lambda kv: victim_order(kv[0][0])):
        acc = [r["int8_accuracy"] if r["int8_accuracy"] is not None else r["deployed_accuracy"] for r in got]
        delta = [a - qat[r["seed"]]["int8_accuracy"] for a, r in zip(acc, got, strict=True) if r["seed"] in qat]
        kl = [r["kl_fp_int8"] for r in got if r["kl_fp_int8"] is not None]
        ratio = [r["kl_fp_int8"] / qat[r["seed"]]["kl_fp_int8"] for r in got if r["kl_fp_int8"] and r["seed"] in qat]
        out.append([name, str(len(got)), pm(acc, 100, 2), pm(delta, 100, 2), pm(kl, 1, 4),
                    f"{statistics.mean(ratio):.1f}x" if ratio else "-"])  # fmt: skip
    headers = ["victim", "seeds", "int8 accuracy %", "vs QAT (pp)", "KL(f_fp || f_int8)", "KL / QAT"]
    return Table("Victims", headers, out)


def attacks_table(rows: list[dict]) -> Table:
    attacks = [r for r in rows if r["level"] == "attack" and r["defense"] == "none"]
    victims = sorted({r["victim"] for r in attacks}, key=victim_order)
    settings = sorted({(r["attack"], r["pool"], r["budget"], r["labels"]) for r in attacks})
    by = group(attacks, "victim", "attack", "pool", "budget", "labels")
    out = []
    for s in settings:
        cells = []
        for v in victims:
            got = by.get((v, *s), [])
            cells.append(f"{pm([r['surrogate_accuracy'] for r in got])} / {pm([r['fidelity'] for r in got])}")
        out.append([" ".join(map(str, s)), *cells])
    return Table("Thieves: surrogate accuracy % / fidelity %", ["attack pool budget labels", *victims], out)


def effective_table(rows: list[dict]) -> Table:
    """A thief who notices poisoned probabilities can fall back to top-1 labels: per seed, the
    better of the soft- and the hard-label thief is the protection a victim really gets."""
    attacks = [r for r in rows if r["level"] == "attack" and r["defense"] == "none"]
    victims = sorted({r["victim"] for r in attacks}, key=victim_order)
    by = group(attacks, "victim", "attack", "pool", "budget", "seed", "labels")
    settings = sorted({(r["attack"], r["pool"], r["budget"]) for r in attacks})
    out = []
    for s in settings:
        cells, qat = [], {}
        for v in victims:
            best = {}
            for seed in sorted({r["seed"] for r in attacks}):
                soft, hard = by.get((v, *s, seed, "soft")), by.get((v, *s, seed, "hard"))
                if soft and hard:
                    best[seed] = max(soft[0]["surrogate_accuracy"], hard[0]["surrogate_accuracy"])
            if v == "qat":
                qat = best
            delta = [best[k] - qat[k] for k in best if k in qat]
            cells.append(f"{pm(list(best.values()))} ({pm(delta)} pp)" if best else "-")
        if any(c != "-" for c in cells):  # settings run with one label mode only have no row here
            out.append([" ".join(map(str, s)), *cells])
    return Table("Effective thief (better of soft and top-1 labels, per seed): accuracy % (vs QAT)",
                 ["attack pool budget", *victims], out)  # fmt: skip


def defense_table(rows: list[dict]) -> Table:
    defended = [r for r in rows if r["level"] == "attack" and r.get("kind") == "defense"]
    plain = {
        (r["victim"], r["seed"], r["budget"]): r for r in rows if r["level"] == "attack" and r["defense"] == "none"
    }
    out = []
    for (victim, name, value), got in sorted(group(defended, "victim", "defense", "defense_value").items()):
        base = [
            plain[(r["victim"], r["seed"], r["budget"])] for r in got if (r["victim"], r["seed"], r["budget"]) in plain
        ]
        slow = [r["answer_seconds_per_query"] / b["answer_seconds_per_query"] for r, b in zip(got, base, strict=False)]
        out.append([victim, f"{name} {got[0]['defense_param']}={value:g}", pm([r["defended_accuracy"] for r in got]),
                    pm([r["surrogate_accuracy"] for r in got]), f"{statistics.mean(r['defense_l1'] for r in got):.3f}",
                    f"{statistics.mean(slow):.1f}x" if slow else "-"])  # fmt: skip
    # Answer times are taken while the grid runs (--jobs at once): for latency, see the benchmark.
    headers = ["victim", "defense", "defender acc %", "thief acc %", "mean L1", "answer time vs none (grid load)"]
    return Table("Post-hoc defenses", headers, out)


def plot_alpha(rows: list[dict], path: Path) -> bool:
    victims = [r for r in rows if r["level"] == "victim"]
    forms = sorted({r["form"] for r in victims if r["method"] == "divqat"})
    attacks = [r for r in rows if r["level"] == "attack" and r["defense"] == "none"]
    if not forms:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    qat = [r for r in victims if r["method"] == "qat"]
    # The thief shown: the setting run against the most victims, at its largest budget.
    coverage = group(attacks, "attack", "pool", "budget")
    headline = max(coverage, key=lambda k: (len({r["victim"] for r in coverage[k]}), k[2])) if coverage else None
    for form in forms:
        pts = group([r for r in victims if r.get("form") == form] + qat, "alpha")
        xs = sorted(a for (a,) in pts)
        ys = [100 * (1 - statistics.mean(r["int8_accuracy"] for r in pts[(a,)])) for a in xs]
        (line,) = axes[0].plot(xs, ys, marker="o", label=form)
        for labels in ("soft", "hard"):
            chosen = [r for r in attacks if r["labels"] == labels and (r.get("form") == form or r["method"] == "qat")]
            chosen = [r for r in chosen if (r["attack"], r["pool"], r["budget"]) == headline]
            by = group(chosen, "alpha")
            if not by:
                continue
            xs2 = sorted(a for (a,) in by)
            ys2 = [100 * (1 - statistics.mean(r["surrogate_accuracy"] for r in by[(a,)])) for a in xs2]
            style = "-" if labels == "soft" else "--"
            axes[1].plot(xs2, ys2, marker="o", ls=style, color=line.get_color(), label=f"{form}, {labels} labels")
    axes[0].set(xlabel="alpha (0 = QAT)", ylabel="victim int8 error %", title="Victim error")
    thief = " ".join(map(str, headline)) if headline else "none"
    axes[1].set(xlabel="alpha (0 = QAT)", ylabel="surrogate error %", title=f"Thief error ({thief} queries)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path)


def plot_defenses(rows: list[dict], path: Path) -> bool:
    defended, plain = defense_rows(rows)
    attacks = defended + plain
    names = sorted({r["defense"] for r in defended})
    if not names:
        return False
    defended_victims = sorted({r["victim"] for r in defended}, key=victim_order)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for victim in defended_victims:
            chosen = [r for r in attacks if r["victim"] == victim and r["defense"] in (name, "none")]
            pts = group(chosen, "defense_value")
            keys = sorted(pts)
            xs = [100 * statistics.mean(r["defended_accuracy"] for r in pts[k]) for k in keys]
            ys = [100 * statistics.mean(r["surrogate_accuracy"] for r in pts[k]) for k in keys]
            ax.plot(xs, ys, marker="o", label=victim)
        ax.set(title=name, xlabel="defender accuracy %", ylabel="attacker accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path)


def plot_latency(rows: list[dict], path: Path) -> bool:
    defended, plain = defense_rows(rows)
    by = group(defended + plain, "defense")
    if len(by) < 2:
        return False
    names = sorted(n for (n,) in by)
    values = [1e6 * statistics.mean(r["answer_seconds_per_query"] for r in by[(n,)]) for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, values)
    ax.set(ylabel="microseconds per query (batches of 512)", title="Answer latency per defense")
    return save(fig, path)


def write_report(out: Path) -> list[Path]:
    rows = collect(out)
    if not rows:
        raise DivqatError(f"{out} has no finished jobs yet")
    name = read_json(out / "experiment.json").get("name", out.name)
    tables = [victims_table(rows), attacks_table(rows), effective_table(rows), defense_table(rows)]
    makers = {"alpha.png": plot_alpha, "defenses.png": plot_defenses, "latency.png": plot_latency}
    plots = [(p, f) for p, f in makers.items() if f(rows, out / p)]
    intro = f"# {name}\n\n{len(rows)} finished jobs; mean +- std over seeds.\n"
    md = intro + "\n" + "\n".join(t.markdown() for t in tables if t.rows)
    md += "\n" + "\n".join(f"![{p}]({p})\n" for p, _ in plots)
    (out / "report.md").write_text(md)
    body = "".join(t.html() for t in tables if t.rows) + "".join(f'<p><img src="{p}"></p>' for p, _ in plots)
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font:13px sans-serif}"
    page = f"<!doctype html><meta charset=utf-8><title>{html.escape(name)}</title><style>{style}</style>"
    (out / "report.html").write_text(page + f"<h1>{html.escape(name)}</h1>{body}")
    return [out / "report.md", out / "report.html", *(out / p for p, _ in plots)]
