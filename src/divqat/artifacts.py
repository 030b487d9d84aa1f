"""Run directories: what `divqat train` writes and every later stage reads.

    config.json       the VictimConfig and what the model needs to be rebuilt
    fp.safetensors    the FP model's weights
    quant.safetensors the prepared PT2E graph's state (weights, scales, zero points); quantized runs
    model.onnx        the deployed model: float32 NCHW pixels in [0, 1] -> probabilities
    metrics.json      the measurements

Nothing is unpickled. A run is written to a staging directory and renamed into place, so an
interrupted run never leaves a directory that looks complete.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from divqat import __version__
from divqat.errors import DivqatError
from divqat.models import create_model
from divqat.quant import OnnxModel, QuantConfig, convert, export_onnx, prepare
from divqat.train.victim import Victim, VictimConfig

CONFIG, FP, QUANT, ONNX, METRICS = "config.json", "fp.safetensors", "quant.safetensors", "model.onnx", "metrics.json"


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, to write where a result already is."""
    if out.exists() and not out.is_dir():
        raise DivqatError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DivqatError(f"{out} is not empty; choose another --out or pass --overwrite")


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DivqatError(f"{path.parent} is not a divqat run directory (no {path.name})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DivqatError(f"{path}: unreadable ({e})") from None


def save_state(module: nn.Module, path: Path) -> None:
    save_file({k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}, str(path))


def load_state(module: nn.Module, path: Path) -> nn.Module:
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise DivqatError(f"{path} is missing") from None
    except Exception as e:  # safetensors raises its own error type for corrupt or truncated files
        raise DivqatError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DivqatError(f"{path}: does not match the model in config.json ({str(e).splitlines()[0]})") from None
    return module


def stage_run(out: Path, config: VictimConfig, meta: dict, victim: Victim) -> Path:
    """Write config, weights and the ONNX model to a staging directory beside `out`."""
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_json(staging / CONFIG, {"divqat_version": __version__, "victim": dataclasses.asdict(config), **meta})
    save_state(victim.fp, staging / FP)
    if victim.prepared is not None:
        save_state(victim.prepared, staging / QUANT)
    export_onnx(victim.deployed, tuple(meta["input_shape"]), staging / ONNX, meta["activation_bits"])
    return staging


def commit_run(staging: Path, out: Path, metrics: dict, overwrite: bool, name: str = METRICS) -> None:
    """Add the metrics file and move the staged run into place; an old run goes only with --overwrite."""
    check_output(out, overwrite)
    write_json(staging / name, metrics)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)


def load_config(run: Path) -> tuple[VictimConfig, dict]:
    if not run.is_dir():
        raise DivqatError(f"{run} is not a directory")
    raw = read_json(run / CONFIG)
    try:
        fields = {f.name for f in dataclasses.fields(VictimConfig)}
        config = VictimConfig(**{k: v for k, v in raw["victim"].items() if k in fields})
        meta = {k: raw[k] for k in ("num_classes", "input_shape", "mean", "std", "activation_bits")}
    except (KeyError, TypeError) as e:
        raise DivqatError(f"{run / CONFIG}: malformed ({e})") from None
    return config, meta


def fresh_model(config: VictimConfig, meta: dict) -> nn.Module:
    return create_model(
        config.model,
        num_classes=meta["num_classes"],
        input_shape=tuple(meta["input_shape"]),
        mean=meta["mean"],
        std=meta["std"],
    )


def load_fp(run: Path) -> nn.Module:
    config, meta = load_config(run)
    return load_state(fresh_model(config, meta), run / FP).eval()


def load_quantized(run: Path) -> torch.fx.GraphModule:
    """The in-process quantized graph, rebuilt from its state (no pickle, no training code run)."""
    config, meta = load_config(run)
    if config.method == "fp":
        raise DivqatError(f"{run} holds an FP model, not a quantized one")
    qconfig = QuantConfig(config.weight_bits, meta["activation_bits"])
    prepared = prepare(fresh_model(config, meta), tuple(meta["input_shape"]), qconfig, qat=config.method != "ptq")
    return convert(load_state(prepared, run / QUANT))


def load_onnx(run: Path) -> OnnxModel:
    load_config(run)
    if not (run / ONNX).is_file():
        raise DivqatError(f"{run / ONNX} is missing")
    return OnnxModel(run / ONNX)
