"""Experiment configs: YAML whose victims and attacks are the core configs (divqat/configs.py)
plus sweep axes; errors name the field.

    name: fashion-mnist-small
    seeds: [0]
    baseline: qat                          # the victim every "vs" column is paired with
    victim: {dataset: fashion-mnist, model: lenet5, fp_epochs: 5}   # every victim's defaults
    victims:
      - {name: qat, method: qat}
      - {name: paper-kl, preset: paper, alpha: [0.5, 1.0]}         # a list: one victim per value
      - {name: outlier, method: divqat}                            # the default: outlier-aware
    attack: {surrogate: cnn, epochs: 10, budget: 5000}             # every attack's defaults
    attacks:
      - {pool: [ood, photos], labels: [soft, hard]}                # 2 x 2 thieves on each victim
      - {pool: in, labels: soft, victims: [qat, outlier]}
    defenses:
      victims: [qat, outlier]
      attack: {pool: ood, labels: soft}                            # or a list of such entries
      sweeps:
        - {name: reverse-sigmoid, params: {gamma: 0.2}, values: {beta: [0.04, 0.16]}}

A victim or attack entry takes any field of VictimConfig or AttackConfig (`divqat train
--help`, `divqat attack --help`); a list where the field takes one value is a sweep axis, and
swept victims are named after their values (`paper-kl-a0.5`, `paper-kl-a1`). `preset` names
a PRESETS setting under the fields given; `seeds` limits an entry to some of the experiment's
seeds (a reduced design that says so); an attack's `victims` limits it to some victims.
"""

import dataclasses
import itertools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from divqat.configs import AttackConfig, ConfigError, VictimConfig, preset_fields, victim_config
from divqat.errors import DivqatError

# Fields the experiment sets itself.
OWN_FIELDS = {"seed": "seeds come from the experiment's `seeds` (and an entry's own `seeds`)"}
# Keys of earlier versions, with what replaced them.
RENAMED = {
    "alphas": "give `alpha` a list", "betas": "give `beta` a list", "budgets": "give `budget` a list",
    "train": "the training fields go under `victim:` (every victim) or on a victim",
    "dataset": "`dataset` goes under `victim:`",
    "model": "`model` goes under `victim:` (and `surrogate` under `attack:`)",
}  # fmt: skip
SHORT = {"alpha": "a", "beta": "b", "distill": "d"}  # in swept victims' names


@dataclass(frozen=True)
class Entry:
    """A victim or an attack of the grid: fixed fields, sweep axes (field -> values, in the order
    given) and the spec's own keys."""

    fields: dict = field(default_factory=dict)
    sweep: dict = field(default_factory=dict)
    name: str = ""
    preset: str | None = None
    seeds: tuple[int, ...] | None = None  # default: every seed of the experiment
    victims: tuple[str, ...] | None = None  # attacks only; default: every victim

    def points(self) -> list[dict]:
        """Each point of the sweep: the fixed fields with one value of every axis."""
        axes = list(self.sweep.items())
        return [
            {**self.fields, **dict(zip((k for k, _ in axes), values, strict=True))}
            for values in itertools.product(*(v for _, v in axes))
        ]

    def label(self, point: dict) -> str:
        """A swept victim's name: its own, then each axis's value (alpha 0.5 -> `-a0.5`)."""
        parts = [self.name] + [f"{SHORT.get(k, k + '-')}{show(point[k])}" for k in self.sweep]
        return "-".join(parts)

    def runs_on(self, seed: int) -> bool:
        return self.seeds is None or seed in self.seeds


def show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class DefenseSweep:
    name: str
    params: dict[str, float | str | bool] = field(default_factory=dict)
    values: dict[str, tuple[float, ...]] = field(default_factory=dict)  # one key: the swept parameter


@dataclass(frozen=True)
class DefenseSpec:
    victims: tuple[str, ...]
    attacks: tuple[Entry, ...]  # `attack:` in YAML, one entry or a list of them
    sweeps: tuple[DefenseSweep, ...] = ()
    seeds: tuple[int, ...] | None = None

    def runs_on(self, seed: int) -> bool:
        return self.seeds is None or seed in self.seeds


@dataclass(frozen=True)
class Experiment:
    name: str
    seeds: tuple[int, ...]
    victims: tuple[Entry, ...]
    victim: dict = field(default_factory=dict)  # defaults of every victim
    attack: dict = field(default_factory=dict)  # defaults of every attack
    attacks: tuple[Entry, ...] = ()
    defenses: DefenseSpec | None = None
    baseline: str = "qat"
    plugins: tuple[str, ...] = ()

    def victim_configs(self, entry: Entry, seed: int) -> list[tuple[str, dict, VictimConfig]]:
        """(name, the point's fields, its config) of each victim an entry makes."""
        out = []
        for point in entry.points():
            # The experiment's defaults, then the entry's preset, then its own fields.
            config = victim_config(**{**self.victim, **preset_fields(entry.preset), **point, "seed": seed})
            out.append((entry.label(point), point, config))
        return out

    def attack_configs(self, entry: Entry, seed: int) -> list[AttackConfig]:
        return [AttackConfig(**{**self.attack, **point, "seed": seed}) for point in entry.points()]

    def victim_names(self) -> list[str]:
        return [entry.label(point) for entry in self.victims for point in entry.points()]


def convert(kind, value, where: str):
    """`value` (from YAML) as `kind`, or a DivqatError naming `where`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(option, value, where)
            except DivqatError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        items = value if isinstance(value, list) else [value]
        return tuple(convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(items))
    if origin is dict:
        mapping(value, where)
        return {str(k): convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (str, bool) and isinstance(value, kind):
        return value
    raise DivqatError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise DivqatError(f"{where}: expected a mapping, got {value!r}")
    return value


def is_sweep(hint, value) -> bool:
    """A list where the field takes one value; for a field that takes a list (outliers), a list of lists."""
    if not isinstance(value, list):
        return False
    takes_list = typing.get_origin(hint) is tuple
    return not takes_list or (bool(value) and all(isinstance(v, list) for v in value))


def parse_fields(cls, raw: dict, where: str, own: dict) -> tuple[dict, dict, dict]:
    """(fixed fields, sweep axes, the spec's own keys) of one entry, each value typed."""
    hints = typing.get_type_hints(cls)
    fixed, sweep, keys = {}, {}, {}
    for key, value in raw.items():
        at = f"{where}.{key}"
        if key in own:
            keys[key] = convert(own[key], value, at)
        elif key in OWN_FIELDS:
            raise DivqatError(f"{at}: {OWN_FIELDS[key]}")
        elif key in hints:
            if is_sweep(hints[key], value):
                if not value:
                    raise DivqatError(f"{at}: an empty list sweeps nothing")
                sweep[key] = tuple(convert(hints[key], v, f"{at}[{i}]") for i, v in enumerate(value))
            else:
                fixed[key] = convert(hints[key], value, at)
        else:
            hint = f" ({RENAMED[key]})" if key in RENAMED else ""
            known = ", ".join([*own, *hints])
            raise DivqatError(f"{at}: unknown field{hint} (known: {known})")
    return fixed, sweep, keys


VICTIM_KEYS = {"name": str, "preset": str, "seeds": tuple[int, ...]}
ATTACK_KEYS = {"victims": tuple[str, ...], "seeds": tuple[int, ...]}


def parse_entry(cls, raw, where: str, own: dict) -> Entry:
    fixed, sweep, keys = parse_fields(cls, mapping(raw, where), where, own)
    return Entry(fixed, sweep, **keys)


def parse_defaults(cls, raw, where: str) -> dict:
    fixed, sweep, _ = parse_fields(cls, mapping(raw, where), where, {})
    if sweep:
        raise DivqatError(f"{where}.{next(iter(sweep))}: defaults take one value (sweep on a victim or an attack)")
    return fixed


def parse_experiment(raw) -> Experiment:
    raw = dict(mapping(raw, "config"))
    known = ("name", "seeds", "baseline", "plugins", "victim", "victims", "attack", "attacks", "defenses")
    for key in raw:
        if key not in known:
            hint = f" ({RENAMED[key]})" if key in RENAMED else ""
            raise DivqatError(f"config.{key}: unknown field{hint} (known: {', '.join(known)})")
    for key in ("name", "seeds", "victims"):
        if key not in raw:
            raise DivqatError(f"config.{key}: required field is missing")
    victims = raw["victims"] if isinstance(raw["victims"], list) else [raw["victims"]]
    attacks = raw.get("attacks") or []
    defenses = None
    if raw.get("defenses") is not None:
        d = mapping(raw["defenses"], "defenses")
        unknown = sorted(set(d) - {"victims", "attack", "sweeps", "seeds"})
        if unknown:
            raise DivqatError(f"defenses.{unknown[0]}: unknown field (known: victims, attack, sweeps, seeds)")
        sweeps = d.get("sweeps") or []
        defenses = DefenseSpec(
            victims=convert(tuple[str, ...], d.get("victims", []), "defenses.victims"),
            attacks=tuple(
                parse_entry(
                    AttackConfig,
                    a,
                    f"defenses.attack[{i}]" if isinstance(d.get("attack"), list) else "defenses.attack",
                    {},
                )
                for i, a in enumerate(d["attack"] if isinstance(d.get("attack"), list) else [d.get("attack", {})])
            ),
            sweeps=tuple(parse_sweep(s, f"defenses.sweeps[{i}]") for i, s in enumerate(sweeps)),
            seeds=convert(tuple[int, ...] | None, d.get("seeds"), "defenses.seeds"),
        )
    return Experiment(
        name=convert(str, raw["name"], "config.name"),
        seeds=convert(tuple[int, ...], raw["seeds"], "config.seeds"),
        baseline=convert(str, raw.get("baseline", "qat"), "config.baseline"),
        plugins=convert(tuple[str, ...], raw.get("plugins", []), "config.plugins"),
        victim=parse_defaults(VictimConfig, raw.get("victim", {}), "victim"),
        attack=parse_defaults(AttackConfig, raw.get("attack", {}), "attack"),
        victims=tuple(parse_entry(VictimConfig, v, f"victims[{i}]", VICTIM_KEYS) for i, v in enumerate(victims)),
        attacks=tuple(parse_entry(AttackConfig, a, f"attacks[{i}]", ATTACK_KEYS) for i, a in enumerate(attacks)),
        defenses=defenses,
    )


def parse_sweep(raw, where: str) -> DefenseSweep:
    raw = mapping(raw, where)
    unknown = sorted(set(raw) - {"name", "params", "values"})
    if unknown:
        raise DivqatError(f"{where}.{unknown[0]}: unknown field (known: name, params, values)")
    if "name" not in raw:
        raise DivqatError(f"{where}.name: required field is missing")
    return DefenseSweep(
        name=convert(str, raw["name"], f"{where}.name"),
        params=convert(dict[str, float | str | bool], raw.get("params", {}), f"{where}.params"),
        values=convert(dict[str, tuple[float, ...]], raw.get("values", {}), f"{where}.values"),
    )


def located(where: str, make):
    """`make()`, its config errors named by where in the YAML they come from."""
    try:
        return make()
    except ConfigError as e:
        raise DivqatError(f"{where}.{e.field}: {e.message}") from None


def check(experiment: Experiment) -> None:
    """Every config the grid will make is made (and so validated) now, before any work starts;
    then what only the experiment knows: seeds, names, references between entries."""
    from divqat.defenses import DEFENSES, create_defense

    def need(ok: bool, where: str, message: str):
        if not ok:
            raise DivqatError(f"{where}: {message}")

    need(bool(experiment.seeds), "seeds", "at least one seed is needed")
    need(bool(experiment.victims), "victims", "at least one victim is needed")
    seed = experiment.seeds[0]
    located("victim", lambda: victim_config(**experiment.victim, seed=seed))
    located("attack", lambda: AttackConfig(**experiment.attack, seed=seed))
    made = []  # (name, config) of every victim, made once here
    for i, entry in enumerate(experiment.victims):
        need(bool(entry.name), f"victims[{i}].name", "required field is missing")
        made += [(n, c) for n, _, c in located(f"victims[{i}]", lambda e=entry: experiment.victim_configs(e, seed))]
    entries = [(f"attacks[{i}]", a) for i, a in enumerate(experiment.attacks)]
    if experiment.defenses:
        many = len(experiment.defenses.attacks) > 1
        entries += [(f"defenses.attack[{i}]" if many else "defenses.attack", a)
                    for i, a in enumerate(experiment.defenses.attacks)]  # fmt: skip
    for where, entry in entries:
        located(where, lambda e=entry: experiment.attack_configs(e, seed))
    for where, spec in [*((f"victims[{i}]", v) for i, v in enumerate(experiment.victims)),
                        *entries, *((("defenses", experiment.defenses),) if experiment.defenses else ())]:  # fmt: skip
        extra = sorted(set(spec.seeds or ()) - set(experiment.seeds))
        need(not extra, f"{where}.seeds", f"seeds {extra} are not among the experiment's seeds")
    known = experiment.victim_names()
    need(len(set(known)) == len(known), "victims", f"victim names must be unique (got {', '.join(known)})")
    first = {}
    for name, config in made:
        twin = first.setdefault(config, name)
        need(twin == name, "victims", f"{twin} and {name} are the same victim (the same config): keep one")
    listing = ", ".join(known)
    for i, a in enumerate(experiment.attacks):
        for j, name in enumerate(a.victims or ()):
            need(name in known, f"attacks[{i}].victims[{j}]", f"unknown victim {name!r} (known: {listing})")
    need(experiment.baseline in known, "baseline", f"unknown victim {experiment.baseline!r} (known: {listing})")
    if experiment.defenses:
        for i, name in enumerate(experiment.defenses.victims):
            need(name in known, f"defenses.victims[{i}]", f"unknown victim {name!r} (known: {listing})")
        for i, s in enumerate(experiment.defenses.sweeps):
            where = f"defenses.sweeps[{i}]"
            need(s.name in DEFENSES, f"{where}.name", f"unknown defense {s.name!r}")
            need(len(s.values) == 1, f"{where}.values", "give exactly one parameter to sweep")
            for param, values in s.values.items():
                for value in values:
                    try:
                        create_defense(s.name, {**s.params, param: value})
                    except DivqatError as e:
                        raise DivqatError(f"{where}: {e}") from None


def load_experiment(path: Path) -> Experiment:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DivqatError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DivqatError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    experiment = parse_experiment(raw)
    from divqat.plugins import load_plugins

    load_plugins(experiment.plugins)  # before the check: the config may name what they register
    check(experiment)
    return experiment


def as_dict(experiment: Experiment) -> dict:
    """The experiment as plain data (experiment.json)."""
    return dataclasses.asdict(experiment)
