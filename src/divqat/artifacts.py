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
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from divqat import __version__
from divqat.configs import VictimConfig
from divqat.errors import DivqatError
from divqat.files import (
    CONFIG,
    FP,
    MARKER,
    METRICS,
    ONNX,
    QUANT,
    RESULT,
    check_placeable,
    is_marked,
    mark,
    read_json,
    write_json,
)  # fmt: skip
from divqat.models import create_model
from divqat.quant import OnnxModel, QuantConfig, convert, cpu_has_vnni, export_onnx, prepare

log = logging.getLogger(__name__)

__all__ = [
    "CONFIG", "FP", "METRICS", "ONNX", "QUANT", "RESULT", "check_placeable", "is_marked", "mark", "read_json",
    "write_json",
]  # fmt: skip


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, to write where a result already is, or anywhere a run cannot go:
    `--overwrite` replaces a divqat run (marked by divqat), never any other directory."""
    check_placeable(out)
    if out.exists() and not out.is_dir():
        raise DivqatError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DivqatError(f"{out} is not empty; choose another --out or pass --overwrite")
        if not is_marked(out):
            raise DivqatError(f"{out} is not a divqat run (no {MARKER} marker); --overwrite replaces only those")


def remove_run(path: Path) -> None:
    """Delete a directory divqat wrote (marked) or an empty one; refuse anything else."""
    if not path.exists():
        return
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    elif path.is_dir() and is_marked(path):
        shutil.rmtree(path)
    else:
        raise DivqatError(f"{path} is in the way and was not written by divqat; move it away")


def staging_for(out: Path, kind: str) -> Path:
    """A fresh, marked staging directory beside `out` (an interrupted run's is replaced)."""
    staging = out.with_name(f".{out.name}.partial")
    remove_run(staging)
    staging.mkdir(parents=True)
    mark(staging, kind)
    return staging


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


def stage_run(
    out: Path, config: VictimConfig, meta: dict, fp: nn.Module, deployed: nn.Module, prepared: nn.Module | None
) -> Path:
    """Write config, weights and the ONNX model to a staging directory beside `out`: the FP
    model, the deployed one (FP or converted) and, when quantized, the prepared graph whose
    state rebuilds it."""
    staging = staging_for(out, "run")
    write_json(staging / CONFIG, {"divqat_version": __version__, "victim": dataclasses.asdict(config), **meta})
    save_state(fp, staging / FP)
    if prepared is not None:
        save_state(prepared, staging / QUANT)
    export_onnx(deployed, tuple(meta["input_shape"]), staging / ONNX, meta["activation_bits"])
    return staging


def commit_run(staging: Path, out: Path, metrics: dict, overwrite: bool, name: str = METRICS) -> None:
    """Add the metrics file and move the staged run into place; an old run goes only with --overwrite."""
    check_output(out, overwrite)
    write_json(staging / name, metrics)
    if out.exists() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old")
        remove_run(old)
        out.rename(old)
        staging.rename(out)
        remove_run(old)
    else:
        remove_run(out)  # empty
        staging.rename(out)


def load_config(run: Path) -> tuple[VictimConfig, dict]:
    if not run.is_dir():
        raise DivqatError(f"{run} is not a directory")
    raw = read_json(run / CONFIG)
    try:
        fields = {f.name for f in dataclasses.fields(VictimConfig)}
        config = VictimConfig(**{k: v for k, v in raw["victim"].items() if k in fields})  # every field is stored
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
    _, meta = load_config(run)
    if not (run / ONNX).is_file():
        raise DivqatError(f"{run / ONNX} is missing")
    if meta["activation_bits"] == 8 and not cpu_has_vnni():  # the reason 7 is the default there (QuantConfig)
        log.warning("%s: 8-bit activations on a CPU without VNNI - onnxruntime's int8 products can saturate "
                    "(0.10 of probability measured on an AMD EPYC); a run trained here with 7 bits deploys exactly",
                    run)  # fmt: skip
    return OnnxModel(run / ONNX)
