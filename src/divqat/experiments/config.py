"""Experiment configs: YAML validated into frozen dataclasses; errors name the field.

name: fashion-mnist-small
dataset: fashion-mnist
model: lenet5
seeds: [0]
train: {fp_epochs: 4, epochs: 1}
victims:
  - {name: qat, method: qat}
  - {name: nt-js, method: divqat, divergence: js, non_target: true, alphas: [0.5, 1.0]}
attacks:
  - {attack: knockoff, pool: ood, budgets: [2000], labels: [soft, hard], epochs: 10}
defenses:
  victims: [qat, nt-js-a0.5]
  attack: {attack: knockoff, pool: ood, budgets: [2000], labels: [soft], epochs: 10}
  sweeps:
    - {name: reverse-sigmoid, params: {gamma: 0.2}, values: {beta: [0.04, 0.16]}}
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from divqat.errors import DivqatError


@dataclass(frozen=True)
class TrainSpec:
    fp_epochs: int = 10
    fp_lr: float = 1e-3
    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 256
    train_limit: int | None = None


@dataclass(frozen=True)
class VictimSpec:
    name: str
    method: str
    alphas: tuple[float, ...] = (0.0,)
    divergence: str = "js"
    non_target: bool = True
    logq_floor: float = 0.0
    hinge: float = 0.0
    warmup: float = 0.0
    betas: tuple[float, ...] = (0.0,)  # the outlier term's weights, one victim each (with each alpha)
    outlier_loss: str = "divergence"
    outliers: tuple[str, ...] = ("noise", "strokes", "shapes")
    distill: float = 0.0
    weight_bits: int = 8
    seeds: tuple[int, ...] | None = None  # default: every seed (fewer: a costly row of a reduced design)


@dataclass(frozen=True)
class AttackSpec:
    attack: str
    pool: str = "ood"
    budgets: tuple[int, ...] = (10_000,)
    labels: tuple[str, ...] = ("soft", "hard")
    epochs: int = 20
    surrogate: str | None = None  # default: the victims' architecture
    victims: tuple[str, ...] | None = None  # default: every victim
    augment: bool = False
    confidence_tau: float = 0.0
    confidence_mode: str = "drop"
    smoothing: int = 1
    in_seeds: int = 0
    seeds: tuple[int, ...] | None = None  # default: every seed of the experiment


@dataclass(frozen=True)
class DefenseSweep:
    name: str
    params: dict[str, float] = field(default_factory=dict)
    values: dict[str, tuple[float, ...]] = field(default_factory=dict)  # one key: the swept parameter


@dataclass(frozen=True)
class DefenseSpec:
    victims: tuple[str, ...]
    attack: AttackSpec
    sweeps: tuple[DefenseSweep, ...] = ()
    seeds: tuple[int, ...] | None = None  # default: every seed of the experiment


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: str
    model: str
    seeds: tuple[int, ...]
    victims: tuple[VictimSpec, ...]
    train: TrainSpec = TrainSpec()
    attacks: tuple[AttackSpec, ...] = ()
    defenses: DefenseSpec | None = None
    baseline: str = "qat"  # the victim every "vs" column of the report is paired with
    plugins: tuple[str, ...] = ()  # modules imported first (here and in every worker): a user's registrations


def convert(kind, value, where: str):
    """`value` (from YAML) as `kind`, or a DivqatError naming `where`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return convert(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise DivqatError(f"{where}: expected a mapping, got {value!r}")
        fields = {f.name: f for f in dataclasses.fields(kind)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise DivqatError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(fields)})")
        hints = typing.get_type_hints(kind)
        kwargs = {k: convert(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        missing = [
            n
            for n, f in fields.items()
            if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise DivqatError(f"{where}.{missing[0]}: required field is missing")
        return kind(**kwargs)
    if origin is tuple:
        items = value if isinstance(value, list) else [value]
        return tuple(convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(items))
    if origin is dict:
        if not isinstance(value, dict):
            raise DivqatError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (str, bool) and isinstance(value, kind):
        return value
    raise DivqatError(f"{where}: expected {kind.__name__}, got {value!r}")


def check(experiment: Experiment) -> None:
    """Values that parse but make no sense, named by field, before any work starts."""
    from divqat.attacks import ATTACKS
    from divqat.attacks.base import CONFIDENCE_MODES, LABEL_MODES, POOLS
    from divqat.data import DATASETS
    from divqat.data.outliers import OUTLIERS
    from divqat.defenses import DEFENSES
    from divqat.models import MODELS
    from divqat.train.outlier_losses import OUTLIER_LOSSES
    from divqat.train.victim import METHODS

    def need(ok: bool, where: str, message: str):
        if not ok:
            raise DivqatError(f"{where}: {message}")

    need(experiment.dataset in DATASETS, "dataset", f"unknown dataset {experiment.dataset!r}")
    need(experiment.model in MODELS, "model", f"unknown model {experiment.model!r}")
    need(bool(experiment.seeds), "seeds", "at least one seed is needed")
    need(bool(experiment.victims), "victims", "at least one victim is needed")
    for where, spec in [*((f"victims[{i}]", v) for i, v in enumerate(experiment.victims)),
                        *((f"attacks[{i}]", a) for i, a in enumerate(experiment.attacks)),
                        *((("defenses", experiment.defenses),) if experiment.defenses else ())]:  # fmt: skip
        extra = sorted(set(spec.seeds or ()) - set(experiment.seeds))
        need(not extra, f"{where}.seeds", f"seeds {extra} are not among the experiment's seeds")
    names = [v.name for v in experiment.victims]
    need(len(set(names)) == len(names), "victims", "victim names must be unique")
    for i, v in enumerate(experiment.victims):
        need(v.method in METHODS, f"victims[{i}].method", f"unknown method {v.method!r}")
        need(all(a >= 0 for a in v.alphas), f"victims[{i}].alphas", "alpha must be >= 0")
        need(all(b >= 0 for b in v.betas), f"victims[{i}].betas", "beta must be >= 0")
        need(v.outlier_loss in OUTLIER_LOSSES, f"victims[{i}].outlier_loss", f"unknown outlier loss {v.outlier_loss!r}")
        for j, source in enumerate(v.outliers):
            need(source in OUTLIERS, f"victims[{i}].outliers[{j}]", f"unknown outlier source {source!r}")
    specs = list(enumerate(experiment.attacks))
    if experiment.defenses:
        specs.append(("defenses.attack", experiment.defenses.attack))
    for i, a in specs:
        where = f"attacks[{i}]" if isinstance(i, int) else i
        need(a.attack in ATTACKS, f"{where}.attack", f"unknown attack {a.attack!r}")
        need(a.pool in POOLS, f"{where}.pool", f"unknown pool {a.pool!r}")
        need(all(b > 0 for b in a.budgets), f"{where}.budgets", "budgets must be positive")
        need(all(lab in LABEL_MODES for lab in a.labels), f"{where}.labels", "labels must be soft or hard")
        need(a.surrogate is None or a.surrogate in MODELS, f"{where}.surrogate", f"unknown model {a.surrogate!r}")
        need(0 <= a.confidence_tau < 1, f"{where}.confidence_tau", "confidence_tau must be in [0, 1)")
        need(a.confidence_mode in CONFIDENCE_MODES, f"{where}.confidence_mode", "confidence_mode: drop or weight")
        need(a.smoothing >= 1 and a.in_seeds >= 0, f"{where}", "smoothing must be >= 1 and in_seeds >= 0")
    from divqat.experiments.grid import victim_names

    known = victim_names(experiment)
    for i, a in enumerate(experiment.attacks):
        for j, name in enumerate(a.victims or ()):
            need(name in known, f"attacks[{i}].victims[{j}]", f"unknown victim {name!r} (known: {', '.join(known)})")
    listing = ", ".join(known)
    need(experiment.baseline in known, "baseline", f"unknown victim {experiment.baseline!r} (known: {listing})")
    if experiment.defenses:
        for i, name in enumerate(experiment.defenses.victims):
            need(name in known, f"defenses.victims[{i}]", f"unknown victim {name!r} (known: {', '.join(known)})")
        for i, s in enumerate(experiment.defenses.sweeps):
            need(s.name in DEFENSES, f"defenses.sweeps[{i}].name", f"unknown defense {s.name!r}")
            need(len(s.values) == 1, f"defenses.sweeps[{i}].values", "give exactly one parameter to sweep")


def load_experiment(path: Path) -> Experiment:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DivqatError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DivqatError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    experiment = convert(Experiment, raw, "config")
    from divqat.plugins import load_plugins

    load_plugins(experiment.plugins)  # before the check: the config may name what they register
    check(experiment)
    return experiment
