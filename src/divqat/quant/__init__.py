"""Quantization: PT2E preparation and conversion, in-process int8 kernels, ONNX QDQ export."""

from divqat.quant.config import QuantConfig, cpu_has_vnni
from divqat.quant.onnx_export import OnnxModel, export_onnx
from divqat.quant.pt2e import calibrate, compile_int8, convert, outlier_forward, prepare, set_mode

__all__ = [
    "OnnxModel",
    "QuantConfig",
    "calibrate",
    "compile_int8",
    "convert",
    "cpu_has_vnni",
    "export_onnx",
    "outlier_forward",
    "prepare",
    "set_mode",
]
