"""Recipes for a victim model: FP training, then PTQ, QAT or DivQAT from that FP model.

All four go through `fit`; they differ only in the model handed to it (the FP network or its
fake-quantized PT2E graph) and the objective (CE or the DivQAT loss).
"""

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from divqat.data import Splits
from divqat.data.outliers import make_outliers, parse_sources
from divqat.device import default_device
from divqat.errors import DivqatError
from divqat.models import create_model
from divqat.quant import QuantConfig, calibrate, convert, prepare
from divqat.train.loop import History, TrainConfig, fit, predict_proba
from divqat.train.objectives import DivQATLoss, cross_entropy

METHODS = ("fp", "ptq", "qat", "divqat")


@dataclass(frozen=True)
class VictimConfig:
    """Everything that determines a victim. Defaults: the embedded Fashion-MNIST LeNet-5 setting."""

    dataset: str = "fashion-mnist"
    model: str = "lenet5"
    method: str = "divqat"
    # DivQAT objective (see DivQATLoss); defaults are the bounded form chosen in docs/divqat.md.
    alpha: float = 0.5
    divergence: str = "js"
    non_target: bool = True
    logq_floor: float = 0.0
    hinge: float = 0.0
    warmup: float = 0.0
    # The outlier term (DivQATLoss): beta * M on outliers from these sources (data/outliers/).
    beta: float = 0.0
    outlier_loss: str = "divergence"
    outliers: tuple[str, ...] = ("noise", "strokes", "shapes")
    distill: float = 0.0  # pull in-distribution answers towards the FP model's (DivQATLoss)
    weight_bits: int = 8
    activation_bits: int | None = None
    epochs: int = 2  # QAT / DivQAT epochs
    lr: float = 1e-4
    fp_epochs: int = 10
    fp_lr: float = 1e-3
    batch_size: int = 256
    calibration_size: int = 2048  # PTQ
    seed: int = 0
    train_limit: int | None = None  # first N victim-train images (tests, quick runs)

    def __post_init__(self):
        object.__setattr__(self, "outliers", parse_sources(self.outliers))  # "a,b" or a list, as given
        if self.method not in METHODS:
            raise DivqatError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.epochs < 1 or self.fp_epochs < 0:
            raise DivqatError("epochs must be >= 1 and fp_epochs >= 0")
        self.quant_config()  # validates the bit widths
        self.objective()  # validates alpha, divergence and bounds

    def quant_config(self) -> QuantConfig:
        return QuantConfig(self.weight_bits, self.activation_bits)

    def objective(self):
        if self.method != "divqat":
            return cross_entropy
        return DivQATLoss(
            self.alpha, self.divergence, self.non_target, self.logq_floor, self.hinge, self.warmup, self.beta,
            self.outlier_loss, self.distill,
        )  # fmt: skip

    @property
    def uses_outliers(self) -> bool:
        return self.method == "divqat" and self.beta > 0


@dataclass
class Victim:
    fp: nn.Module
    deployed: nn.Module  # the FP model or the converted quantized graph
    prepared: torch.fx.GraphModule | None = None  # its state rebuilds `deployed` (quantized only)
    fp_history: History = field(default_factory=History)
    history: History = field(default_factory=History)


def new_model(config: VictimConfig, splits: Splits) -> nn.Module:
    mean, std = splits.channel_stats()
    return create_model(
        config.model, num_classes=splits.num_classes, input_shape=splits.input_shape, mean=mean, std=std
    )


def train_fp(
    config: VictimConfig, splits: Splits, quiet: bool = False, model: nn.Module | None = None
) -> tuple[nn.Module, History]:
    """FP training of the registry's `config.model`, or of a copy of the given (untrained) model."""
    torch.manual_seed(config.seed)
    model = (copy.deepcopy(model) if model is not None else new_model(config, splits)).to(default_device())
    train = splits.victim_train.head(config.train_limit)
    run = TrainConfig(config.fp_epochs, config.batch_size, config.fp_lr, seed=config.seed)
    history = fit(model, {"inputs": train.images, "targets": train.labels}, cross_entropy, run, label="fp", quiet=quiet)
    return model.cpu(), history


def quantize(config: VictimConfig, splits: Splits, fp: nn.Module, quiet: bool = False) -> Victim:
    """PTQ, QAT or DivQAT from a trained FP model, which is left untouched. The fake-quantized
    graph trains on the CPU: the x86 PT2E flow targets CPU int8 kernels."""
    train = splits.victim_train.head(config.train_limit)
    qconfig = config.quant_config()
    if config.method == "ptq":
        prepared = prepare(fp, splits.input_shape, qconfig, qat=False)
        calibrate(prepared, train.images[: config.calibration_size])
        return Victim(fp=fp, prepared=prepared, deployed=convert(copy.deepcopy(prepared)))
    torch.manual_seed(config.seed)
    prepared = prepare(fp, splits.input_shape, qconfig, qat=True)
    data = {"inputs": train.images, "targets": train.labels}
    if config.method == "divqat":
        # The teacher is frozen and the inputs are not augmented: compute its softmax once.
        data["teacher_probs"] = predict_proba(fp, train.images)
    if config.uses_outliers:
        # As many outliers as training images, paired by row: each is seen once per epoch.
        data["outliers"] = make_outliers(config.outliers, train.images, len(train), config.seed)
        data["outlier_teacher_probs"] = predict_proba(fp, data["outliers"])
    run = TrainConfig(config.epochs, config.batch_size, config.lr, seed=config.seed)
    history = fit(prepared, data, config.objective(), run, label=config.method, quiet=quiet)
    return Victim(fp=fp, prepared=prepared, deployed=convert(copy.deepcopy(prepared)), history=history)


def build_victim(
    config: VictimConfig,
    splits: Splits,
    fp: nn.Module | None = None,
    quiet: bool = False,
    model: nn.Module | None = None,
) -> Victim:
    """The whole recipe; pass `fp` to reuse a trained FP model (e.g. one per seed in a sweep), or
    `model` to train your own architecture instead of the registry's `config.model`."""
    fp_history = History()
    if fp is None:
        fp, fp_history = train_fp(config, splits, quiet, model)
    if config.method == "fp":
        return Victim(fp=fp, deployed=fp, fp_history=fp_history, history=fp_history)
    victim = quantize(config, splits, fp, quiet)
    victim.fp_history = fp_history
    return victim
