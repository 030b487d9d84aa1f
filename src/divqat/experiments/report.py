"""`divqat report`: tables (mean +- std over seeds) and plots from a results directory.

Writes report.md and report.html beside the PNG plots: victim and surrogate error against
alpha or beta; defender against attacker accuracy per defense; defense latency. Every "vs"
column is paired by seed with the config's `baseline` victim (QAT by default).
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


# What makes two thieves the same thief (besides the victim, the seed and the defense).
THIEF = ("attack", "pool", "budget", "labels", "surrogate", "variant")
SETTING = THIEF  # the attack setting a defense sweep is compared on


def describe_thief(key: tuple) -> str:
    return " ".join(str(v) for v in key if v not in (None, "plain"))


def defense_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Defended attacks, and the undefended runs of exactly the attack settings they used."""
    defended = [r for r in rows if r["level"] == "attack" and r.get("kind") == "defense"]
    settings = {tuple(r.get(k) for k in SETTING) for r in defended}
    plain = [r for r in rows if r["level"] == "attack" and r["defense"] == "none"
             and tuple(r.get(k) for k in SETTING) in settings]  # fmt: skip
    return defended, plain


def save(fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def make_order(baseline: str):
    return lambda name: (name != "fp", name != baseline, name)


def accuracy_of(r: dict) -> float:
    return r["int8_accuracy"] if r["int8_accuracy"] is not None else r["deployed_accuracy"]


def victims_table(rows: list[dict], baseline: str) -> Table:
    victims = [r for r in rows if r["level"] in ("fp", "victim")]
    base = {r["seed"]: r for r in victims if r["victim"] == baseline}
    out = []
    for (name,), got in sorted(group(victims, "victim").items(), key=lambda kv: make_order(baseline)(kv[0][0])):
        acc = [accuracy_of(r) for r in got]
        delta = [a - accuracy_of(base[r["seed"]]) for a, r in zip(acc, got, strict=True) if r["seed"] in base]
        kl = [r["kl_fp_int8"] for r in got if r["kl_fp_int8"] is not None]
        ratio = [r["kl_fp_int8"] / base[r["seed"]]["kl_fp_int8"] for r in got
                 if r["kl_fp_int8"] and r["seed"] in base and base[r["seed"]]["kl_fp_int8"]]  # fmt: skip
        out.append([name, str(len(got)), pm(acc, 100, 2), pm(delta, 100, 2), pm(kl, 1, 4),
                    f"{statistics.mean(ratio):.1f}x" if ratio else "-"])  # fmt: skip
    headers = ["victim", "seeds", "int8 accuracy %", f"vs {baseline} (pp)", "KL(f_fp || f_int8)", f"KL / {baseline}"]
    return Table("Victims", headers, out)


def undefended(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["level"] == "attack" and r["defense"] == "none"]


def attacks_table(rows: list[dict], baseline: str) -> Table:
    attacks = undefended(rows)
    victims = sorted({r["victim"] for r in attacks}, key=make_order(baseline))
    settings = sorted({tuple(r.get(k) for k in THIEF) for r in attacks}, key=str)
    by = group(attacks, "victim", *THIEF)
    out = []
    for s in settings:
        cells = []
        for v in victims:
            got = by.get((v, *s), [])
            cells.append(f"{pm([r['surrogate_accuracy'] for r in got])} / {pm([r['fidelity'] for r in got])}")
        out.append([describe_thief(s), *cells])
    return Table("Thieves: surrogate accuracy % / fidelity %", ["thief", *victims], out)


def best_per_seed(rows: list[dict]) -> dict[int, float]:
    best: dict[int, float] = {}
    for r in rows:
        best[r["seed"]] = max(best.get(r["seed"], 0.0), r["surrogate_accuracy"])
    return best


def versus(best: dict[int, float], base: dict[int, float]) -> str:
    delta = [best[k] - base[k] for k in best if k in base]
    return f"{pm(list(best.values()))} ({pm(delta)} pp)" if best else "-"


def effective_table(rows: list[dict], baseline: str) -> Table:
    """A thief who notices poisoned probabilities can fall back to top-1 labels: per seed, the
    better of the soft- and the hard-label thief is the protection a victim really gets."""
    attacks = undefended(rows)
    victims = sorted({r["victim"] for r in attacks}, key=make_order(baseline))
    keys = [k for k in THIEF if k != "labels"]
    by = group(attacks, "victim", *keys)
    out = []
    for s in sorted({tuple(r.get(k) for k in keys) for r in attacks}, key=str):
        both = {v: [r for r in by.get((v, *s), [])] for v in victims}
        complete = {v: [r for r in got if {x["labels"] for x in got if x["seed"] == r["seed"]} >= {"soft", "hard"}]
                    for v, got in both.items()}  # fmt: skip
        if not any(complete.values()):  # settings run with one label mode only have no row here
            continue
        base = best_per_seed(complete.get(baseline, []))
        out.append([describe_thief(s), *(versus(best_per_seed(complete[v]), base) for v in victims)])
    return Table(f"Effective thief (better of soft and top-1 labels, per seed): accuracy % (vs {baseline})",
                 ["thief", *victims], out)  # fmt: skip


def strongest_table(rows: list[dict], baseline: str) -> Table:
    """The defender's worst case: per pool and seed, the best of every thief run on that pool
    (any attack, surrogate, label mode or adaptive variant), against each victim. Thieves that
    hold in-distribution images (pools `in`, `mixed`, in-distribution seeds) are their own rows:
    no answer-preserving defense can stop them."""
    attacks = undefended(rows)
    victims = sorted({r["victim"] for r in attacks}, key=make_order(baseline))

    def pool_of(r):
        return r["pool"] + (" + in-distribution seeds" if r.get("in_seeds") else "")

    out = []
    for pool in sorted({pool_of(r) for r in attacks}):
        chosen = [r for r in attacks if pool_of(r) == pool]
        by = group(chosen, "victim")
        base = best_per_seed(by.get((baseline,), []))
        thieves = len({tuple(r.get(k) for k in THIEF) for r in chosen})
        out.append([pool, str(thieves), *(versus(best_per_seed(by.get((v,), [])), base) for v in victims)])
    return Table(f"Strongest thief per pool (best of all thieves, per seed): accuracy % (vs {baseline})",
                 ["pool", "thieves", *victims], out)  # fmt: skip


def defense_table(rows: list[dict]) -> Table:
    defended, plain_rows = defense_rows(rows)
    plain = {(r["victim"], r["seed"], *(r.get(k) for k in SETTING)): r for r in plain_rows}

    def baseline_of(r):
        return plain.get((r["victim"], r["seed"], *(r.get(k) for k in SETTING)))

    out = []
    # One row per thief too: a soft-label and a top-1 thief behind the same defense are two results.
    groups = group(defended, "victim", "defense", "defense_value", *SETTING)
    for (victim, name, value, *setting), got in sorted(groups.items(), key=lambda kv: str(kv[0])):
        pairs = [(r, baseline_of(r)) for r in got if baseline_of(r) is not None]
        slow = [r["answer_seconds_per_query"] / b["answer_seconds_per_query"] for r, b in pairs]
        out.append([victim, f"{name} {got[0]['defense_param']}={value:g}", describe_thief(tuple(setting)),
                    pm([r["defended_accuracy"] for r in got]),
                    pm([r["surrogate_accuracy"] for r in got]), f"{statistics.mean(r['defense_l1'] for r in got):.3f}",
                    f"{statistics.mean(slow):.1f}x" if slow else "-"])  # fmt: skip
    # Answer times are taken while the grid runs (--jobs at once): for latency, see the benchmark.
    headers = ["victim", "defense", "thief", "defender acc %", "thief acc %", "mean L1"]
    headers.append("answer time vs none (grid load)")
    return Table("Post-hoc defenses", headers, out)


def plot_strength(rows: list[dict], path: Path, baseline: str) -> bool:
    """Victim and thief error against each form's strength: beta for forms that sweep the
    outlier term, else alpha; the baseline victim sits at 0."""
    victims = [r for r in rows if r["level"] == "victim"]
    forms = sorted({r["form"] for r in victims if r["method"] == "divqat"})
    attacks = undefended(rows)
    if not forms:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    base = [r for r in victims if r["victim"] == baseline]
    # The thief shown: the setting run against the most victims, at its largest budget.
    coverage = group(attacks, "attack", "pool", "budget", "surrogate", "variant")
    headline = max(coverage, key=lambda k: (len({r["victim"] for r in coverage[k]}), k[2])) if coverage else None
    for form in forms:
        own = [r for r in victims if r.get("form") == form]
        axis = "beta" if any(r.get("beta") for r in own) else "alpha"
        at = {r["victim"]: r.get(axis) or 0.0 for r in own} | {baseline: 0.0}
        pts = group([{**r, "x": at[r["victim"]]} for r in own + base], "x")
        xs = sorted(x for (x,) in pts)
        ys = [100 * (1 - statistics.mean(accuracy_of(r) for r in pts[(x,)])) for x in xs]
        (line,) = axes[0].plot(xs, ys, marker="o", label=f"{form} ({axis})")
        for labels in ("soft", "hard"):
            chosen = [
                {**r, "x": at[r["victim"]]}
                for r in attacks
                if r["labels"] == labels
                and r["victim"] in at
                and tuple(r.get(k) for k in ("attack", "pool", "budget", "surrogate", "variant")) == headline
            ]
            by = group(chosen, "x")  # fmt: skip
            if not by:
                continue
            xs2 = sorted(x for (x,) in by)
            ys2 = [100 * (1 - statistics.mean(r["surrogate_accuracy"] for r in by[(x,)])) for x in xs2]
            style = "-" if labels == "soft" else "--"
            axes[1].plot(xs2, ys2, marker="o", ls=style, color=line.get_color(), label=f"{form}, {labels} labels")
    axes[0].set(xlabel=f"alpha or beta (0 = {baseline})", ylabel="victim int8 error %", title="Victim error")
    thief = describe_thief(headline) if headline else "none"
    axes[1].set(xlabel=f"alpha or beta (0 = {baseline})", ylabel="surrogate error %", title=f"Thief error ({thief})")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save(fig, path)


def plot_defenses(rows: list[dict], path: Path, baseline: str) -> bool:
    defended, plain = defense_rows(rows)
    attacks = defended + plain
    names = sorted({r["defense"] for r in defended})
    if not names:
        return False
    defended_victims = sorted({r["victim"] for r in defended}, key=make_order(baseline))
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for victim in defended_victims:
            chosen = [r for r in attacks if r["victim"] == victim and r["defense"] in (name, "none")]
            for labels in sorted({r["labels"] for r in chosen}):  # one curve per label mode, never their mean
                pts = group([r for r in chosen if r["labels"] == labels], "defense_value")
                keys = sorted(pts)
                xs = [100 * statistics.mean(r["defended_accuracy"] for r in pts[k]) for k in keys]
                ys = [100 * statistics.mean(r["surrogate_accuracy"] for r in pts[k]) for k in keys]
                ax.plot(xs, ys, marker="o", linestyle="-" if labels == "soft" else "--", label=f"{victim} ({labels})")
        ax.set(title=name, xlabel="defender accuracy %", ylabel="attacker accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path)


def plot_latency(rows: list[dict], path: Path, baseline: str) -> bool:
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
    experiment = read_json(out / "experiment.json")
    name, baseline = experiment.get("name", out.name), experiment.get("baseline", "qat")
    tables = [victims_table(rows, baseline), strongest_table(rows, baseline), effective_table(rows, baseline),
              attacks_table(rows, baseline), defense_table(rows)]  # fmt: skip
    makers = {"alpha.png": plot_strength, "defenses.png": plot_defenses, "latency.png": plot_latency}
    plots = [(p, f) for p, f in makers.items() if f(rows, out / p, baseline)]
    intro = f"# {name}\n\n{len(rows)} finished jobs; mean +- std over seeds.\n"
    md = intro + "\n" + "\n".join(t.markdown() for t in tables if t.rows)
    md += "\n" + "\n".join(f"![{p}]({p})\n" for p, _ in plots)
    (out / "report.md").write_text(md)
    body = "".join(t.html() for t in tables if t.rows) + "".join(f'<p><img src="{p}"></p>' for p, _ in plots)
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font:13px sans-serif}"
    page = f"<!doctype html><meta charset=utf-8><title>{html.escape(name)}</title><style>{style}</style>"
    (out / "report.html").write_text(page + f"<h1>{html.escape(name)}</h1>{body}")
    return [out / "report.md", out / "report.html", *(out / p for p, _ in plots)]
