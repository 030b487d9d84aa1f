"""The knobs, defined once: what determines a victim, and what determines a theft.

`VictimConfig` (its DivQAT objective in `DivQATConfig`) and `AttackConfig` are the only place
where a hyperparameter, its default, its help text and its check are written. The YAML specs
of `divqat run` are these fields plus sweep axes (experiments/config.py), the options of `divqat
train` and `divqat attack` are generated from them (cli_options.py), and `divqat.api` takes
them as keyword arguments. Every check is in `__post_init__`, and its error names the field.

This module imports no torch: the report and the YAML loader read the fields without it. Names
that live in a registry (methods, divergences, pools, attacks, models...) are checked against
the registry when a config is made, importing it then.
"""

import dataclasses
import math
from dataclasses import dataclass, field

from divqat.errors import DivqatError

METHODS = ("fp", "ptq", "qat", "divqat")
CUSTOM = "custom"  # the dataset of a user's own tensors (divqat.api.dataset): given as splits, never looked up
# Class names of a user's own modules handed to divqat.api.train_victim: trained as given, not built
# by name (register a builder with divqat.models.register_model to reload one by name later).
OWN_MODELS: set[str] = set()
LABEL_MODES = ("soft", "hard")
SCHEDULES = ("cosine", "constant")
CONFIDENCE_MODES = ("drop", "weight")


class ConfigError(DivqatError):
    """A value that makes no sense, and the field it was given for (`field: message`)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.field, self.message = name, message


def knob(default, help: str, **cli):
    """A config field with its help text; `cli` holds extra option names, e.g. names=("--bits",),
    or the option's own name in place of --field-name (flag="--attack-param")."""
    kind = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kind, metadata={"help": help, **cli})


def need(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(name, message)


def non_negative(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        need(math.isfinite(value) and value >= 0, name, f"must be a finite number >= 0, got {value}")


def in_registry(registry, name: str, value) -> None:
    need(value in registry, name, f"unknown {registry.kind} {value!r}; choose from {', '.join(sorted(registry))}")


def in_registry_or_folder(registry, name: str, value) -> None:
    """A registered name, or `folder:PATH` naming a directory of your own images."""
    from divqat.data.folders import folder_path, is_folder

    if not is_folder(str(value)):
        return in_registry(registry, name, value)

    try:
        folder_path(value)
    except DivqatError as e:
        raise ConfigError(name, str(e)) from None


def split_names(value) -> tuple[str, ...]:
    """'a,b' or a list of names, as given in YAML, on the command line or from Python."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(s).strip() for s in items if str(s).strip())


@dataclass(frozen=True, kw_only=True)
class DivQATConfig:
    """The DivQAT objective (train/objectives.py):
    L = CE(y, f_q(x)) - alpha * D(f_fp(x) || f_q(x)) + beta * M(f_q(x_out), f_fp(x_out)) + distill * KL(f_fp || f_q).

    The defaults are the setting that protects (docs/divqat.md, "Protection that holds"); the
    paper's form is PRESETS["paper"]."""

    alpha: float = knob(0.0, "Weight of the divergence D from the FP model on training images (the paper's term).")
    divergence: str = knob("js", "D: kl (the paper's), reverse-kl or js (bounded by log 2).")
    non_target: bool = knob(
        True, "D over the non-target classes only (each side renormalised).", names=("--non-target/--all-classes",)
    )
    logq_floor: float = knob(0.0, "Clamp log q at log(this) inside D; 0: off.")
    hinge: float = knob(0.0, "Cap each sample's D at this; 0: off.")
    warmup: float = knob(0.0, "Fraction of training over which alpha and beta ramp up from 0.")
    beta: float = knob(2.0, "Weight of the outlier term M on generated outliers; 0: off (the plain objective).")
    outlier_loss: str = knob("divergence", "M: divergence, misinformation, shift, uniform or argmin.")
    outliers: tuple[str, ...] = knob(
        ("noise", "strokes", "shapes"), "Outlier sources, comma-separated (divqat list: outlier sources)."
    )
    distill: float = knob(3.0, "Weight of KL(f_fp || f_q) on training images: keeps their answers; 0: off.")

    def __post_init__(self):
        from divqat.data.outliers import OUTLIERS
        from divqat.train.divergences import DIVERGENCES
        from divqat.train.outlier_losses import OUTLIER_LOSSES

        object.__setattr__(self, "outliers", split_names(self.outliers))
        non_negative(self, "alpha", "logq_floor", "hinge", "warmup", "beta", "distill")
        need(self.logq_floor < 1, "logq_floor", f"must be < 1, got {self.logq_floor}")
        need(self.warmup <= 1, "warmup", f"must be <= 1, got {self.warmup}")
        in_registry(DIVERGENCES, "divergence", self.divergence)
        in_registry(OUTLIER_LOSSES, "outlier_loss", self.outlier_loss)
        need(bool(self.outliers), "outliers", "name at least one outlier source")
        for source in self.outliers:
            in_registry(OUTLIERS, "outliers", source)


@dataclass(frozen=True, kw_only=True)
class VictimConfig(DivQATConfig):
    """Everything that determines a victim. Defaults: outlier-aware DivQAT of LeNet-5 on the
    embedded Fashion-MNIST, the setting measured to protect (docs/divqat.md)."""

    dataset: str = knob("fashion-mnist", "Victim's dataset (divqat list: datasets), or folder:PATH (train/, test/).")
    model: str = knob("lenet5", "Architecture from the model registry.")
    method: str = knob("divqat", "fp, ptq, qat or divqat.")
    weight_bits: int = knob(8, "Weight bits: 8 or 4.", names=("--bits",))
    activation_bits: int | None = knob(None, "Activation bits: 8 or 7; default 8 on CPUs with VNNI, else 7.")
    epochs: int = knob(4, "QAT / DivQAT epochs (`divqat train --method fp` takes them as fp_epochs).")
    lr: float = knob(1e-4, "QAT / DivQAT learning rate.")
    fp_epochs: int = knob(10, "Epochs of FP training (when no FP model is given).")
    fp_lr: float = knob(1e-3, "FP learning rate.")
    batch_size: int = knob(256, "Training batch size.")
    calibration_size: int = knob(2048, "PTQ: calibration images.")
    seed: int = knob(0, "Seed of everything random in training.")
    train_limit: int | None = knob(None, "Use only the first N victim-train images (quick runs, tests).")

    def __post_init__(self):
        from divqat.data import DATASETS
        from divqat.models import MODELS

        super().__post_init__()
        need(self.method in METHODS, "method", f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        need(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        need(self.fp_epochs >= 0, "fp_epochs", f"must be >= 0, got {self.fp_epochs}")
        need(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        need(self.calibration_size >= 1, "calibration_size", f"must be >= 1, got {self.calibration_size}")
        need(self.train_limit is None or self.train_limit >= 1, "train_limit", "must be >= 1")
        for name in ("lr", "fp_lr"):
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, name, f"must be a positive number, got {value}")
        need(self.weight_bits in (4, 8), "weight_bits", f"must be 8 or 4, got {self.weight_bits}")
        need(self.activation_bits in (None, 7, 8), "activation_bits", f"must be 8 or 7, got {self.activation_bits}")
        if self.dataset != CUSTOM:
            in_registry_or_folder(DATASETS, "dataset", self.dataset)
        if self.model not in OWN_MODELS:
            in_registry(MODELS, "model", self.model)

    @property
    def uses_outliers(self) -> bool:
        return self.method == "divqat" and self.beta > 0

    def objective_settings(self) -> dict:
        """The DivQAT objective's fields as they were used (none for the other methods)."""
        if self.method != "divqat":
            return {"alpha": 0.0, "divergence": None}
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(DivQATConfig)}
        return {**settings, "outliers": list(self.outliers) if self.uses_outliers else None}


# Named settings of the DivQAT objective: a preset's fields, then what is given explicitly.
PRESETS = {
    # The default: outlier-aware DivQAT, chosen on the validation pool (docs/divqat.md): -0.65 pp of
    # accuracy, the best out-of-distribution thief -19.9 pp (digits) and -30.5 pp (photos), 3 seeds.
    "protect": {"alpha": 0.0, "divergence": "js", "non_target": True, "beta": 2.0, "distill": 3.0},
    # The paper's objective, CE - alpha * KL(f_fp || f_q) over all classes: protects by <= 1 pp.
    "paper": {"alpha": 0.5, "divergence": "kl", "non_target": False, "beta": 0.0, "distill": 0.0},
    # The bounded form: non-target Jensen-Shannon, no outlier term (36x QAT's divergence, -0.3 pp).
    "bounded": {"alpha": 0.5, "divergence": "js", "non_target": True, "beta": 0.0, "distill": 0.0},
}


def preset_fields(preset: str | None) -> dict:
    if preset is not None and preset not in PRESETS:
        raise ConfigError("preset", f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return dict(PRESETS.get(preset, {}))


def victim_config(preset: str | None = None, **fields) -> VictimConfig:
    """A VictimConfig from a preset's settings (PRESETS) with `fields` given on top."""
    base = preset_fields(preset)
    unknown = sorted(set(fields) - field_names(VictimConfig))
    if unknown:
        raise ConfigError(
            unknown[0], f"no such victim setting (settings: {', '.join(sorted(field_names(VictimConfig)))})"
        )
    return VictimConfig(**{**base, **fields})


@dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """One theft. Past the basics, the ways a thief adapts to a training-time defense:
    `labels="hard"` (top-1 only), `confidence_tau` (drop, or down-weight to max prob / tau, the
    answers whose max probability is below tau), `smoothing` (query each image as k augmented
    copies and train on the mean answer; every copy is a query) and `in_seeds` (that many images
    of the thief's in-distribution split mixed into the pool), `consistency_noise` (ask each image
    twice, the second time with Gaussian noise of that std, and train only on images whose two
    answers agree on the top-1: a thief trying to spot a watermark). `augment` trains the surrogate
    on randomly shifted, rotated and scaled views of its queries (the answers kept);
    `label_smoothing` eps trains it on (1 - eps) target + eps / K (a top-1 thief's one-hot labels
    regularised as soft answers would regularise it)."""

    attack: str = knob("knockoff", "knockoff, knockoff-adaptive, jbda or dfme (divqat list: attacks).")
    params: dict[str, bool | int | float | str] = knob(
        dict, "The attack's own parameters, key=value, repeatable (divqat list: attacks).", flag="--attack-param"
    )
    pool: str = knob(
        "ood",
        "Query pool: in, ood, mixed, photos, validation, own (only the in_seeds), or folder:PATH (your own images).",
    )
    budget: int = knob(10_000, "Queries the thief may make (--backend http: what the key has left).")
    labels: str = knob("soft", "soft: train on the probabilities; hard: on the top-1 labels only.")
    surrogate: str = knob("lenet5", "Surrogate architecture (cnn: the strongest thief we have).")
    epochs: int = knob(20, "Surrogate training epochs.")
    lr: float = knob(1e-3, "Surrogate learning rate.")
    batch_size: int = knob(128, "Surrogate batch size.")
    schedule: str = knob("cosine", "Surrogate learning-rate schedule: cosine (to 0) or constant (ART's).")
    seed: int = knob(0, "Seed of the thief: its samples, augmentations and surrogate.")
    augment: bool = knob(
        False, "Train the surrogate on augmented views of its queries.", names=("--augment/--no-augment",)
    )
    confidence_tau: float = knob(0.0, "Adaptive thief: drop (or down-weight) answers less confident than this.")
    confidence_mode: str = knob("drop", "drop or weight, for confidence_tau.")
    smoothing: int = knob(1, "Adaptive thief: ask each image as k augmented copies (k queries each).")
    in_seeds: int = knob(0, "Adaptive thief: mix this many in-distribution images into the pool.")
    consistency_noise: float = knob(
        0.0, "Adaptive thief against watermarks: ask each image twice, once with noise of this std, drop disagreements."
    )
    label_smoothing: float = knob(0.0, "Train the surrogate on (1 - eps) target + eps / classes (eps: this).")

    def __post_init__(self):
        from divqat.attacks import ATTACKS, create_attack
        from divqat.data.pools import POOLS
        from divqat.models import MODELS

        in_registry(ATTACKS, "attack", self.attack)
        try:  # the attack's own check and types: "step=0.2" from the command line is a float
            given = attack_params(self.params)
            typed = create_attack(self.attack, given).params()
        except DivqatError as e:
            raise ConfigError("params", str(e)) from None
        object.__setattr__(self, "params", {k: typed[k] for k in sorted(given)})
        need(self.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        need(self.budget > 0, "budget", f"must be a positive number of queries, got {self.budget}")
        need(self.labels in LABEL_MODES, "labels", f"must be one of {', '.join(LABEL_MODES)}, got {self.labels!r}")
        need(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        need(math.isfinite(self.lr) and self.lr > 0, "lr", f"must be a positive number, got {self.lr}")
        need(0 <= self.confidence_tau < 1, "confidence_tau", f"must be in [0, 1), got {self.confidence_tau}")
        need(
            self.confidence_mode in CONFIDENCE_MODES, "confidence_mode", f"must be one of {', '.join(CONFIDENCE_MODES)}"
        )
        need(self.smoothing >= 1, "smoothing", f"must be >= 1, got {self.smoothing}")
        need(self.in_seeds >= 0, "in_seeds", f"must be >= 0, got {self.in_seeds}")
        need(0 <= self.consistency_noise < 1, "consistency_noise", f"must be in [0, 1), got {self.consistency_noise}")
        need(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        in_registry_or_folder(POOLS, "pool", self.pool)
        need(self.pool != "own" or self.in_seeds > 0 or self.attack == "dfme", "pool", "own needs in_seeds > 0 images")
        in_registry(MODELS, "surrogate", self.surrogate)


def attack_params(value) -> dict:
    """An attack's parameters as a mapping, from one (YAML, Python) or from key=value words (CLI)."""
    if isinstance(value, dict):
        return dict(value)
    params = {}
    for word in [value] if isinstance(value, str) else list(value):
        key, sep, item = str(word).partition("=")
        if not sep or not key.strip():
            raise DivqatError(f"takes key=value, got {word!r}")
        params[key.strip()] = item.strip()
    return params


# Knobs added after results were published: a job's hash holds them only when they differ from
# their default, so that adding one kept every finished job's key (experiments/grid.py).
LATER_KNOBS = {"params": {}, "schedule": "cosine", "label_smoothing": 0.0}


def hashed_spec(config) -> dict:
    """A config as plain data for a job's hash: every field, those of LATER_KNOBS only when set."""
    spec = dataclasses.asdict(config)
    return {k: v for k, v in spec.items() if k not in LATER_KNOBS or v != LATER_KNOBS[k]}


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def thief_fields() -> tuple[str, ...]:
    """What makes two thieves the same thief: every attack setting but the seed."""
    return tuple(f.name for f in dataclasses.fields(AttackConfig) if f.name != "seed")
