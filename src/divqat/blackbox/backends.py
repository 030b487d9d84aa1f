"""Backends for the black-box victim, loaded from a run directory."""

from pathlib import Path

from divqat import artifacts
from divqat.errors import DivqatError
from divqat.quant import compile_int8
from divqat.train.loop import predict_proba

BACKENDS = ("onnx", "int8", "fp", "http")


def load_backend(run: Path, kind: str = "onnx", *, url: str | None = None, key: str | None = None):
    """`onnx`: the deployed file in onnxruntime; `int8`: in-process oneDNN int8 kernels;
    `fp`: the FP model the victim started from; `http`: a served victim (`divqat serve`) at
    `url`, queried with `key` (its budget and output mode are the server's)."""
    if kind == "http":
        if not url or not key:
            raise DivqatError("the http backend needs --url and --key")
        from divqat.blackbox.http import HttpBackend

        return HttpBackend(url, key)
    if kind == "onnx":
        return artifacts.load_onnx(run).predict_proba
    if kind == "int8":
        model = compile_int8(artifacts.load_quantized(run))
        return lambda images: predict_proba(model, images)
    if kind == "fp":
        model = artifacts.load_fp(run)
        return lambda images: predict_proba(model, images)
    raise DivqatError(f"unknown backend {kind!r}; choose from {', '.join(BACKENDS)}")


def as_backend(victim):
    """Any form of a victim as an `images -> probabilities` callable: an object with
    `predict_proba` (divqat.api.Victim), a run directory, an ONNX file, or a callable."""
    if hasattr(victim, "predict_proba"):
        return victim.predict_proba
    if isinstance(victim, str | Path):
        path = Path(victim)
        if path.is_file() and path.suffix == ".onnx":
            from divqat.quant import OnnxModel

            return OnnxModel(path).predict_proba
        return load_backend(path, "onnx")  # checks it is a run directory
    if callable(victim):
        return victim
    raise DivqatError(f"a victim is a Victim, a run directory, an ONNX file or a callable, got {type(victim).__name__}")
