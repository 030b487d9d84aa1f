"""Recipes for a victim model: FP training, then PTQ, QAT or DivQAT from that FP model.

All four go through `fit`; they differ only in the model handed to it (the FP network or its
fake-quantized PT2E graph) and the objective (CE or the DivQAT loss).
"""

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from divqat.configs import VictimConfig
from divqat.data import Splits
from divqat.data.outliers import make_outliers
from divqat.device import default_device
from divqat.models import create_model
from divqat.quant import QuantConfig, calibrate, convert, prepare
from divqat.train.loop import History, Progress, TrainConfig, fit, predict_proba
from divqat.train.losses import cross_entropy
from divqat.train.objectives import DivQATLoss


def objective(config: VictimConfig):
    """CE for FP, PTQ and QAT; for DivQAT, the DivQAT loss of the config (a VictimConfig is a DivQATConfig)."""
    return DivQATLoss(config) if config.method == "divqat" else cross_entropy


def quant_config(config: VictimConfig) -> QuantConfig:
    return QuantConfig(config.weight_bits, config.activation_bits)


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
    config: VictimConfig, splits: Splits, progress: Progress | None = None, model: nn.Module | None = None
) -> tuple[nn.Module, History]:
    """FP training of the registry's `config.model`, or of a copy of the given (untrained) model."""
    torch.manual_seed(config.seed)
    model = (copy.deepcopy(model) if model is not None else new_model(config, splits)).to(default_device())
    train = splits.victim_train.head(config.train_limit)
    run = TrainConfig(config.fp_epochs, config.batch_size, config.fp_lr, seed=config.seed)
    history = fit(
        model, {"inputs": train.images, "targets": train.labels}, cross_entropy, run, label="fp", progress=progress
    )
    return model.cpu(), history


def quantize(config: VictimConfig, splits: Splits, fp: nn.Module, progress: Progress | None = None) -> Victim:
    """PTQ, QAT or DivQAT from a trained FP model, which is left untouched. The fake-quantized
    graph trains on the CPU: the x86 PT2E flow targets CPU int8 kernels."""
    train = splits.victim_train.head(config.train_limit)
    qconfig = quant_config(config)
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
    history = fit(prepared, data, objective(config), run, label=config.method, progress=progress)
    return Victim(fp=fp, prepared=prepared, deployed=convert(copy.deepcopy(prepared)), history=history)


def build_victim(
    config: VictimConfig,
    splits: Splits,
    fp: nn.Module | None = None,
    progress: Progress | None = None,
    model: nn.Module | None = None,
) -> Victim:
    """The whole recipe; pass `fp` to reuse a trained FP model (e.g. one per seed in a sweep), or
    `model` to train your own architecture instead of the registry's `config.model`."""
    fp_history = History()
    if fp is None:
        fp, fp_history = train_fp(config, splits, progress, model)
    if config.method == "fp":
        return Victim(fp=fp, deployed=fp, fp_history=fp_history, history=fp_history)
    victim = quantize(config, splits, fp, progress)
    victim.fp_history = fp_history
    return victim
