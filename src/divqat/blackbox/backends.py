"""Backends for the black-box victim, loaded from a run directory."""

from pathlib import Path

from divqat import artifacts
from divqat.errors import DivqatError
from divqat.quant import compile_int8
from divqat.train import predict_proba

BACKENDS = ("onnx", "int8", "fp")


def load_backend(run: Path, kind: str = "onnx"):
    """`onnx`: the deployed file in onnxruntime; `int8`: in-process oneDNN int8 kernels;
    `fp`: the FP model the victim started from."""
    if kind == "onnx":
        return artifacts.load_onnx(run).predict_proba
    if kind == "int8":
        model = compile_int8(artifacts.load_quantized(run))
        return lambda images: predict_proba(model, images)
    if kind == "fp":
        model = artifacts.load_fp(run)
        return lambda images: predict_proba(model, images)
    raise DivqatError(f"unknown backend {kind!r}; choose from {', '.join(BACKENDS)}")
