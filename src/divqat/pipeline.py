"""`divqat train`: build a victim, deploy it, measure it, write its run directory."""

import dataclasses
import statistics
from pathlib import Path

from torch import nn

from divqat import artifacts, metrics
from divqat.configs import VictimConfig
from divqat.data import Splits, load_splits
from divqat.errors import DivqatError
from divqat.quant import OnnxModel, compile_int8
from divqat.train.loop import Progress, predict_proba
from divqat.train.victim import Victim, build_victim, quant_config


def run_meta(config: VictimConfig, splits: Splits) -> dict:
    mean, std = splits.channel_stats()
    return {
        "num_classes": splits.num_classes,
        "input_shape": list(splits.input_shape),
        "mean": mean,
        "std": std,
        "activation_bits": quant_config(config).resolved().activation_bits,
    }


def fmean_or_none(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def measure(config: VictimConfig, splits: Splits, victim: Victim, deployed: OnnxModel) -> dict:
    """Test-set metrics; the deployed model is measured as shipped, through onnxruntime."""
    test = splits.test
    fp_probs = predict_proba(victim.fp, test.images)
    probs = deployed.predict_proba(test.images)
    quantized = config.method != "fp"
    return {
        **{k: getattr(config, k) for k in ("method", "dataset", "model", "seed", "epochs")},
        **config.objective_settings(),
        "bits": config.weight_bits,
        "activation_bits": quant_config(config).resolved().activation_bits if quantized else 32,
        "fp_accuracy": metrics.accuracy(fp_probs, test.labels),
        "int8_accuracy": metrics.accuracy(probs, test.labels) if quantized else None,
        "deployed_accuracy": metrics.accuracy(probs, test.labels),
        "kl_fp_int8": metrics.mean_kl(fp_probs, probs) if quantized else None,
        "mean_max_prob": metrics.mean_max_prob(probs),
        "fp_mean_max_prob": metrics.mean_max_prob(fp_probs),
        "epoch_seconds": fmean_or_none(victim.history.epoch_seconds),
        "fp_epoch_seconds": fmean_or_none(victim.fp_history.epoch_seconds),
        "train_loss": victim.history.epoch_loss[-1] if victim.history.epoch_loss else None,
        "test_size": len(test),
    }


def load_fp_for(config: VictimConfig, fp_from: Path):
    source, _ = artifacts.load_config(fp_from)
    if (source.dataset, source.model) != (config.dataset, config.model):
        raise DivqatError(f"{fp_from} holds {source.model} on {source.dataset}, not {config.model} on {config.dataset}")
    return artifacts.load_fp(fp_from)


def train(
    config: VictimConfig,
    out: Path,
    *,
    data_root: Path | None = None,
    fp_from: Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    test_limit: int | None = None,
    splits: Splits | None = None,
    model: nn.Module | None = None,
) -> dict:
    """Train, deploy and measure a victim; write its run directory. `splits` (your own data, see
    `divqat.api.dataset`) replaces the config's dataset, `model` the registry's architecture."""
    artifacts.check_output(out, overwrite)  # before hours of training, not after
    splits = splits or load_splits(config.dataset, data_root)
    if test_limit:
        splits = dataclasses.replace(splits, test=splits.test.head(test_limit))
    fp = load_fp_for(config, fp_from) if fp_from else None
    victim = build_victim(config, splits, fp, progress, model)
    meta = {**run_meta(config, splits), "fp_from": str(fp_from) if fp_from else None}
    staging = artifacts.stage_run(out, config, meta, victim.fp, victim.deployed, victim.prepared)
    try:
        result = measure(config, splits, victim, OnnxModel(staging / artifacts.ONNX))
        artifacts.commit_run(staging, out, result, overwrite)
    except BaseException:
        artifacts.remove_run(staging)
        raise
    return result


def evaluate(run: Path, *, data_root: Path | None = None, test_limit: int | None = None) -> dict:
    """A run's deployed model as shipped (ONNX) and, when quantized, the in-process int8 model."""
    config, _ = artifacts.load_config(run)
    deployed = artifacts.load_onnx(run)
    fp = artifacts.load_fp(run)
    quantized = artifacts.load_quantized(run) if config.method != "fp" else None
    test = load_splits(config.dataset, data_root).test.head(test_limit)
    probs = deployed.predict_proba(test.images)
    fp_probs = predict_proba(fp, test.images)
    result = {
        "method": config.method,
        "fp_accuracy": metrics.accuracy(fp_probs, test.labels),
        "deployed_accuracy": metrics.accuracy(probs, test.labels),
        "kl_fp_deployed": metrics.mean_kl(fp_probs, probs),
        "mean_max_prob": metrics.mean_max_prob(probs),
    }
    if quantized is not None:
        in_process = predict_proba(compile_int8(quantized), test.images)
        result["in_process_int8_accuracy"] = metrics.accuracy(in_process, test.labels)
        result["onnx_vs_in_process_agreement"] = metrics.agreement(probs, in_process)
    return result
