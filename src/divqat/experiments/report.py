"""`divqat report`: one tidy table of every job, then tables (mean +- std over seeds) and plots.

Writes results.csv (one row per finished job: every config field and every metric a column;
`pandas.read_csv` reads it), report.md and report.html beside the PNG plots.

Comparisons compare like with like:
- a thief is its whole attack config but the seed: thieves that differ in any setting (epochs,
  learning rate, augmentation, ...) are different thieves, never averaged as if they were seeds;
- every "vs" cell is paired with the config's `baseline` victim over the same seeds, and a
  best-of-thieves cell takes the best over the thieves run against *both* victims on those seeds;
- a single seed shows as "(n=1)", never as "+- 0.00".
Timings measured while the grid runs (several jobs at once) are kept in results.csv but not
reported: the benchmarks measure them on an idle machine (docs/benchmarks.md).
"""

import csv
import dataclasses
import html
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from divqat.configs import LATER_KNOBS, AttackConfig, DivQATConfig, VictimConfig, thief_fields  # noqa: E402
from divqat.errors import DivqatError  # noqa: E402
from divqat.experiments.jobs import INDEX  # noqa: E402
from divqat.files import METRICS, RESULT, read_json  # noqa: E402

LABELS = ("level", "job", "seed", "victim", "form", "kind", "variant", "defense", "defense_param", "defense_value",
          "defense_params")  # fmt: skip
THIEF = tuple(f"attack.{name}" for name in thief_fields())
OBJECTIVE = {f"victim.{f.name}" for f in dataclasses.fields(DivQATConfig)}


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |", "|" + " --- |" * len(self.headers)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + ("\n\n" + self.note if self.note else "") + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return f"<h3>{html.escape(self.title)}</h3><table><tr>{head}</tr>{body}</table>{note}"


def pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """mean +- std over seeds; one value shows as (n=1), never with a spread of zero."""
    if not values:
        return "-"
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} +- {statistics.stdev(values) * scale:.{digits}f}"


# ---------------------------------------------------------------------------- the tidy table


def tidy_rows(out: Path) -> list[dict]:
    """Every finished job as one flat row: its labels, its whole config (`victim.FIELD`,
    `attack.FIELD`, `defense.PARAM`; an attack row also carries its victim's config) and its
    measurements. The DivQAT objective's fields are blank for victims that do not use it."""
    if not (out / INDEX).is_file():
        raise DivqatError(f"{out} is not a results directory (no {INDEX}); run `divqat run CONFIG --out {out}` first")
    index = read_json(out / INDEX)
    if not isinstance(index, list) or any("spec" not in e for e in index):
        raise DivqatError(f"{out / INDEX} was written by an earlier divqat; rerun `divqat run` to rewrite it")
    victim_specs = {e["directory"]: e["spec"] for e in index if e["level"] != "attack"}
    rows = []
    for entry in index:
        level = entry["level"]
        path = out / "jobs" / entry["directory"] / (RESULT if level == "attack" else METRICS)
        if not path.is_file():
            continue
        row = {"level": level, "job": entry["directory"], **entry["labels"]}
        if level == "attack" and entry["spec"]["defense"]:
            d = entry["spec"]["defense"]
            fixed = {k: v for k, v in d["params"].items() if k != d["param"]}
            row["defense_params_fixed"] = json.dumps(fixed, sort_keys=True)
        if level == "attack":
            victim = victim_specs.get((entry.get("needs") or [None])[0], {})
            row |= victim_columns(victim)
            attack = {**LATER_KNOBS, **entry["spec"]["attack"]}  # a hash leaves out the later knobs' defaults
            row |= {f"attack.{k}": json.dumps(v) if isinstance(v, dict) else v for k, v in attack.items()}
            defense = entry["spec"]["defense"] or {}
            row |= {f"defense.{k}": v for k, v in (defense.get("params") or {}).items()}
            own = {f.name for f in dataclasses.fields(AttackConfig)} | {"defenses"}
        else:
            row |= victim_columns(entry["spec"])
            own = {f.name for f in dataclasses.fields(VictimConfig)}
        measured = read_json(path)
        row |= {k: v for k, v in measured.items() if k not in own and k not in row and not isinstance(v, list | dict)}
        rows.append(row)
    return rows


def victim_columns(spec: dict) -> dict:
    row = {f"victim.{k}": (list(v) if isinstance(v, tuple) else v) for k, v in spec.items()}
    if spec.get("method") != "divqat":
        row |= dict.fromkeys(OBJECTIVE & row.keys())
    if isinstance(row.get("victim.outliers"), list):
        row["victim.outliers"] = ",".join(row["victim.outliers"])
    return row


def write_csv(rows: list[dict], path: Path) -> None:
    columns = list(LABELS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------- grouping helpers


def group(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in keys)].append(r)
    return groups


def thief(r: dict) -> tuple:
    return tuple(r.get(k) for k in THIEF)


class Describer:
    """A thief in a few words: its attack and pool, and the settings that differ between the
    thieves of this report (so that two different thieves never read the same)."""

    ALWAYS = ("attack.attack", "attack.pool")
    BARE = ("attack.attack", "attack.pool", "attack.labels", "attack.surrogate")

    def __init__(self, rows: list[dict], skip: tuple[str, ...] = ()):
        self.shown = [k for k in THIEF if k not in skip and (k in self.ALWAYS or len({r.get(k) for r in rows}) > 1)]

    def __call__(self, key: tuple) -> str:
        values = dict(zip(THIEF, key, strict=True))
        words = [str(values[k]) if k in self.BARE else f"{k.removeprefix('attack.')}={values[k]}" for k in self.shown]
        return " ".join(words)


def make_order(baseline: str):
    return lambda name: (name != "fp", name != baseline, name)


def accuracy_of(r: dict) -> float:
    return r["int8_accuracy"] if r.get("int8_accuracy") is not None else r["deployed_accuracy"]


def undefended(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["level"] == "attack" and r["defense"] == "none"]


def best_per_seed(rows: list[dict]) -> dict[int, float]:
    best: dict[int, float] = {}
    for r in rows:
        best[r["seed"]] = max(best.get(r["seed"], 0.0), r["surrogate_accuracy"])
    return best


def paired(own: list[dict], base: list[dict]) -> tuple[dict[int, float], dict[int, float], int]:
    """Best per seed of each victim over the (thief, seed) pairs run against both: the thieves
    are the same ones, on the same seeds. Returns both, and how many thieves that is."""
    both = {(thief(r), r["seed"]) for r in own} & {(thief(r), r["seed"]) for r in base}
    keep = [r for r in own if (thief(r), r["seed"]) in both], [r for r in base if (thief(r), r["seed"]) in both]
    return best_per_seed(keep[0]), best_per_seed(keep[1]), len({t for t, _ in both})


def versus(best: dict[int, float], base: dict[int, float]) -> str:
    seeds = sorted(best.keys() & base.keys())
    if not seeds:
        return "-"
    values, deltas = [best[s] for s in seeds], [best[s] - base[s] for s in seeds]
    if len(seeds) == 1:
        return f"{100 * values[0]:.1f} ({100 * deltas[0]:+.1f} pp, n=1)"
    return f"{pm(values)} ({pm(deltas)} pp)"


# ---------------------------------------------------------------------------- tables


def victims_table(rows: list[dict], baseline: str) -> Table:
    victims = [r for r in rows if r["level"] in ("fp", "victim")]
    base = {r["seed"]: r for r in victims if r["victim"] == baseline}
    out = []
    for (name,), got in sorted(group(victims, "victim").items(), key=lambda kv: make_order(baseline)(kv[0][0])):
        acc = [accuracy_of(r) for r in got]
        common = [r for r in got if r["seed"] in base]
        delta = [accuracy_of(r) - accuracy_of(base[r["seed"]]) for r in common]
        kl = [r["kl_fp_int8"] for r in got if r.get("kl_fp_int8") is not None]
        ratio = [r["kl_fp_int8"] / base[r["seed"]]["kl_fp_int8"] for r in common
                 if r.get("kl_fp_int8") and base[r["seed"]].get("kl_fp_int8")]  # fmt: skip
        out.append([name, str(len(got)), pm(acc, 100, 2), pm(delta, 100, 2) if name != baseline else "0",
                    pm(kl, 1, 4), f"{statistics.mean(ratio):.1f}x" if ratio else "-"])  # fmt: skip
    headers = ["victim", "seeds", "int8 accuracy %", f"vs {baseline} (pp, same seeds)", "KL(f_fp || f_int8)",
               f"KL / {baseline}"]  # fmt: skip
    note = ("Quantized victims train further from the FP model (their `epochs` at their `lr`): one that ends above "
            "its FP model has had more training, not a better quantizer.")  # fmt: skip
    return Table("Victims", headers, out, note)


def pool_of(r: dict) -> str:
    seeds = r.get("attack.in_seeds")
    return r["attack.pool"] + (f" + {seeds} in-distribution" if seeds else "")


def is_inside(pool: str) -> bool:
    """Thieves holding in-distribution images: the limit no answer-preserving defense moves."""
    return pool in ("in", "mixed") or "in-distribution" in pool


def strongest_table(rows: list[dict], baseline: str) -> Table:
    """The defender's worst case, per pool: for each seed, the best of every thief (attack,
    surrogate, labels, adaptive variant...) - for a victim beside the baseline, the best over the
    thieves run against both, on the same seeds."""
    attacks = undefended(rows)
    victims = sorted({r["victim"] for r in attacks}, key=make_order(baseline))
    out = []
    for pool in sorted({pool_of(r) for r in attacks}, key=lambda p: (is_inside(p), p)):
        by = group([r for r in attacks if pool_of(r) == pool], "victim")
        base = by.get((baseline,), [])
        cells = []
        for v in victims:
            own = by.get((v,), [])
            if v == baseline:
                cells.append(f"{pm(list(best_per_seed(own).values()))} [{len({thief(r) for r in own})}]")
                continue
            mine, theirs, count = paired(own, base)
            cells.append(f"{versus(mine, theirs)} [{count}]" if count else "-")
        out.append([pool + (" (limit)" if is_inside(pool) else ""), *cells])
    note = (
        "[k]: the number of thieves the best is taken over (for a victim beside the baseline: the thieves run "
        "against both). A maximum over noisy thieves is biased upward, the more so the more thieves it takes; "
        "deltas take the same maximum on both sides. Pools marked (limit) hold in-distribution images: no "
        "defense that keeps in-distribution answers exact stops those thieves."
    )
    return Table(f"Strongest thief per pool (best of the thieves, per seed): accuracy % (vs {baseline})",
                 ["pool", *victims], out, note)  # fmt: skip


def effective_table(rows: list[dict], baseline: str) -> Table:
    """A thief who notices poisoned probabilities can fall back to top-1 labels: per seed, the
    better of the soft- and the hard-label thief is the protection a victim really gets."""
    attacks = undefended(rows)
    victims = sorted({r["victim"] for r in attacks}, key=make_order(baseline))
    keys = tuple(k for k in THIEF if k != "attack.labels")
    describe = Describer(attacks, skip=("attack.labels",))
    by = group(attacks, "victim", *keys)
    out = []
    for setting in sorted({tuple(r.get(k) for k in keys) for r in attacks}, key=str):

        def effective(v, setting=setting):
            got = by.get((v, *setting), [])
            seeds = {s for s in {r["seed"] for r in got}
                     if {r["attack.labels"] for r in got if r["seed"] == s} >= {"soft", "hard"}}  # fmt: skip
            return best_per_seed([r for r in got if r["seed"] in seeds])

        base = effective(baseline)
        if not any(effective(v) for v in victims):  # settings run with one label mode only have no row here
            continue
        cells = [pm(list(base.values())) if v == baseline else versus(effective(v), base) for v in victims]
        out.append([describe_setting(describe, setting), *cells])
    return Table(f"Effective thief (better of soft and top-1 labels, per seed): accuracy % (vs {baseline})",
                 ["thief", *victims], out)  # fmt: skip


def describe_setting(describe: Describer, setting: tuple) -> str:
    """A thief without its label mode, through the describer of the full thief key."""
    labels_at = THIEF.index("attack.labels")
    return describe((*setting[:labels_at], None, *setting[labels_at:]))


def attacks_table(rows: list[dict], baseline: str) -> Table:
    attacks = undefended(rows)
    victims = sorted({r["victim"] for r in attacks}, key=make_order(baseline))
    describe = Describer(attacks)
    by = group(attacks, "victim", *THIEF)
    out = []
    for key in sorted({thief(r) for r in attacks}, key=str):
        cells = []
        for v in victims:
            got = by.get((v, *key), [])
            cells.append(f"{pm([r['surrogate_accuracy'] for r in got])} / {pm([r['fidelity'] for r in got])}")
        out.append([describe(key), *cells])
    return Table("Every thief: surrogate accuracy % / fidelity %", ["thief", *victims], out)


def defense_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Defended attacks, and the undefended runs of the same thieves on the same victims and seeds."""
    defended = [r for r in rows if r["level"] == "attack" and r.get("kind") == "defense"]
    wanted = {(r["victim"], r["seed"], thief(r)) for r in defended}
    plain = [r for r in undefended(rows) if (r["victim"], r["seed"], thief(r)) in wanted]
    return defended, plain


def defense_table(rows: list[dict]) -> Table:
    defended, plain = defense_rows(rows)
    describe = Describer(defended + plain)
    none = group(plain, "victim", *THIEF)
    out = []
    groups = group(defended, "victim", "defense", "defense_params", "defense_param", "defense_value", *THIEF)
    for (victim, name, _, param, value, *key), got in sorted(groups.items(), key=lambda kv: str(kv[0])):
        seeds = {r["seed"] for r in got}
        base = [r for r in none.get((victim, *key), []) if r["seed"] in seeds]
        out.append([victim, f"{name} {param}={value:g}", describe(tuple(key)),
                    pm([r["defended_accuracy"] for r in got]), pm([r["surrogate_accuracy"] for r in got]),
                    pm([r["surrogate_accuracy"] for r in base]),
                    f"{statistics.mean(r['defense_l1'] for r in got):.3f}", proof(got)])  # fmt: skip
    headers = ["victim", "defense", "thief", "defender acc %", "thief acc %", "thief acc, no defense %", "mean L1",
               "clone verified (watermark or order test)"]  # fmt: skip
    if all(row[-1] == "-" for row in out):  # no watermark in this grid: no column for it
        headers, out = headers[:-1], [row[:-1] for row in out]
    return Table("Post-hoc defenses (each thief its own row; answer times: docs/benchmarks.md)", headers, out)


def proof(rows: list[dict]) -> str:
    """How many seeds' clones the watermark (or scramble's order test) verified, and the largest p-value."""
    found = []
    for test in ("watermark", "order"):
        tested = [r for r in rows if r.get(f"{test}_p_value") is not None]
        if tested:
            stolen = sum(bool(r[f"{test}_stolen"]) for r in tested)
            worst = max(r[f"{test}_p_value"] for r in tested)
            found.append(f"{'' if test == 'watermark' else 'order '}{stolen}/{len(tested)} (p <= {worst:.1g})")
    return ", ".join(found) or "-"


# ---------------------------------------------------------------------------- plots


def legend(ax, **options) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def save(fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def strongest(rows: list[dict], victim: str, pools) -> list[float]:
    """The best thief per seed over the given pools, against one victim."""
    return list(best_per_seed([r for r in undefended(rows) if r["victim"] == victim and pool_of(r) in pools]).values())


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def plot_thieves(rows: list[dict], path: Path, baseline: str) -> bool:
    """The strongest thief per pool and victim (bars: mean over seeds, whiskers: std), the
    in-distribution pools hatched as the limit, each victim's own accuracy a dotted line."""
    attacks = undefended(rows)
    if not attacks:
        return False
    victims = sorted({r["victim"] for r in attacks}, key=make_order(baseline))
    pools = sorted({pool_of(r) for r in attacks}, key=lambda p: (is_inside(p), p))
    width = 0.8 / len(victims)
    fig, ax = plt.subplots(figsize=(1.6 + 1.7 * len(pools) * max(1, len(victims) / 2.5), 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    accuracy = {r["victim"]: [] for r in rows if r["level"] in ("fp", "victim")}
    for r in rows:
        if r["level"] in ("fp", "victim"):
            accuracy[r["victim"]].append(accuracy_of(r))
    for i, v in enumerate(victims):
        colour = colours[i % len(colours)]
        for j, pool in enumerate(pools):
            values = strongest(rows, v, [pool])
            if not values:
                continue
            x = j + (i - (len(victims) - 1) / 2) * width
            ax.bar(x, 100 * statistics.mean(values), width * 0.95, yerr=100 * spread(values), capsize=2,
                   color=colour, hatch="//" if is_inside(pool) else None, edgecolor="white",
                   label=v if j == 0 or v not in ax.get_legend_handles_labels()[1] else None)  # fmt: skip
        if accuracy.get(v):
            ax.axhline(100 * statistics.mean(accuracy[v]), color=colour, ls=":", lw=1)
    ax.set_xticks(range(len(pools)), [p + ("\n(limit)" if is_inside(p) else "") for p in pools], fontsize=8)
    ax.set(ylabel="strongest thief's accuracy % (test set)", title="Thieves per pool (dotted: victim accuracy)")
    low = min((100 * statistics.mean(strongest(rows, v, [p])) for v in victims for p in pools
               if strongest(rows, v, [p])), default=0)  # fmt: skip
    ax.set_ylim(max(0, low - 15), 100)
    ax.grid(axis="y", alpha=0.3)
    legend(ax, fontsize=8, loc="upper left")
    return save(fig, path)


def plot_tradeoff(rows: list[dict], path: Path, baseline: str) -> bool:
    """Victim accuracy against the strongest out-of-distribution thief: down and to the right is better."""
    attacks = undefended(rows)
    pools = sorted({pool_of(r) for r in attacks if not is_inside(pool_of(r))})
    victims = sorted({r["victim"] for r in attacks}, key=make_order(baseline))
    if not pools or not victims:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.2))
    markers = "osD^v<>"
    for j, pool in enumerate(pools):
        for v in victims:
            thieves = strongest(rows, v, [pool])
            accs = [accuracy_of(r) for r in rows if r["level"] in ("fp", "victim") and r["victim"] == v]
            if not thieves or not accs:
                continue
            x, y = 100 * statistics.mean(accs), 100 * statistics.mean(thieves)
            ax.errorbar(x, y, xerr=100 * spread(accs), yerr=100 * spread(thieves), marker=markers[j % len(markers)],
                        color=f"C{victims.index(v)}", capsize=2, label=f"{v}, {pool}")  # fmt: skip
            ax.annotate(v, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set(xlabel="victim int8 accuracy % (test set)", ylabel="strongest thief's accuracy %",
           title="Protection against accuracy (lower thief, higher victim: better)")  # fmt: skip
    ax.grid(alpha=0.3)
    legend(ax, fontsize=7)
    return save(fig, path)


def plot_sweeps(rows: list[dict], path: Path, baseline: str) -> bool:
    """For each victim form swept over one setting: victim and strongest-thief error against it,
    one panel per swept setting (alpha and beta never share an axis)."""
    victims = [r for r in rows if r["level"] == "victim"]
    swept = {}
    for r in victims:
        for key in ("victim.alpha", "victim.beta", "victim.distill"):
            values = {x[key] for x in victims if x["form"] == r["form"]}
            if len(values) > 1:
                swept.setdefault(key, set()).add(r["form"])
    if not swept:
        return False
    fig, axes = plt.subplots(1, len(swept), figsize=(5.5 * len(swept), 4), squeeze=False)
    attacks = undefended(rows)
    for ax, (key, forms) in zip(axes[0], sorted(swept.items()), strict=True):
        for i, form in enumerate(sorted(forms)):
            own = [r for r in victims if r["form"] == form]
            xs = sorted({r[key] for r in own})
            err = [100 * (1 - statistics.mean(accuracy_of(r) for r in own if r[key] == x)) for x in xs]
            names = {x: {r["victim"] for r in own if r[key] == x} for x in xs}
            thief_err = [100 * (1 - statistics.mean(best_per_seed([a for a in attacks if a["victim"] in names[x]
                                                                    and not is_inside(pool_of(a))]).values() or [1]))
                         for x in xs]  # fmt: skip
            ax.plot(xs, err, marker="o", color=f"C{i}", label=f"{form}: victim error")
            ax.plot(xs, thief_err, marker="s", ls="--", color=f"C{i}", label=f"{form}: strongest thief's error")
        ax.set(
            xlabel=key.removeprefix("victim."), ylabel="test error %", title=f"Sweep over {key.removeprefix('victim.')}"
        )
        ax.grid(alpha=0.3)
        legend(ax, fontsize=7)
    return save(fig, path)


def plot_defenses(rows: list[dict], path: Path, baseline: str) -> bool:
    """Defender against thief accuracy: a panel per defense and swept parameter (its fixed
    parameters alike), a curve per victim and thief, never a mean over thieves; "none" is drawn
    from the seeds the defense ran on."""
    defended, plain = defense_rows(rows)
    panels = group(defended, "defense", "defense_param", "defense_params_fixed")
    if not panels:
        return False
    describe = Describer(defended + plain)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, ((name, param, _), own) in zip(axes[0], sorted(panels.items(), key=str), strict=True):
        for (victim, *key), mine in sorted(group(own, "victim", *THIEF).items(), key=str):
            wanted = {(r["seed"], thief(r)) for r in mine}
            base = [r for r in plain if r["victim"] == victim and (r["seed"], thief(r)) in wanted]
            values = sorted({r["defense_value"] for r in mine})
            xs = [100 * statistics.mean(r["defended_accuracy"] for r in base)] if base else []
            ys = [100 * statistics.mean(r["surrogate_accuracy"] for r in base)] if base else []
            for v in values:
                at = [r for r in mine if r["defense_value"] == v]
                xs.append(100 * statistics.mean(r["defended_accuracy"] for r in at))
                ys.append(100 * statistics.mean(r["surrogate_accuracy"] for r in at))
            hard = dict(zip(THIEF, key, strict=True))["attack.labels"] == "hard"
            ax.plot(xs, ys, marker="o", linestyle="--" if hard else "-", label=f"{victim}: {describe(tuple(key))}")
        ax.set(title=f"{name} ({param})", xlabel="defender accuracy %", ylabel="attacker accuracy %")
        ax.grid(alpha=0.3)
        legend(ax, fontsize=7)
    return save(fig, path)


def write_report(out: Path) -> list[Path]:
    rows = tidy_rows(out)
    if not rows:
        raise DivqatError(f"{out} has no finished jobs yet")
    experiment = read_json(out / "experiment.json")
    name, baseline = experiment.get("name", out.name), experiment.get("baseline", "qat")
    write_csv(rows, out / "results.csv")
    tables = [victims_table(rows, baseline), strongest_table(rows, baseline), effective_table(rows, baseline),
              attacks_table(rows, baseline), defense_table(rows)]  # fmt: skip
    makers = {"thieves.png": plot_thieves, "tradeoff.png": plot_tradeoff, "sweeps.png": plot_sweeps,
              "defenses.png": plot_defenses}  # fmt: skip
    plots = [p for p, make in makers.items() if make(rows, out / p, baseline)]
    seeds = sorted({r["seed"] for r in rows})
    intro = (f"# {name}\n\n{len(rows)} finished jobs on seeds {', '.join(map(str, seeds))}; mean +- std over "
             f"seeds, (n=1) where one seed ran. Every job, config field and metric: `results.csv`.\n")  # fmt: skip
    md = intro + "\n" + "\n".join(t.markdown() for t in tables if t.rows)
    md += "\n" + "\n".join(f"![{p}]({p})\n" for p in plots)
    (out / "report.md").write_text(md)
    body = "".join(t.html() for t in tables if t.rows) + "".join(f'<p><img src="{p}"></p>' for p in plots)
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font:13px sans-serif}"
    page = f"<!doctype html><meta charset=utf-8><title>{html.escape(name)}</title><style>{style}</style>"
    (out / "report.html").write_text(page + f"<h1>{html.escape(name)}</h1>{body}")
    return [out / "report.md", out / "report.html", out / "results.csv", *(out / p for p in plots)]
