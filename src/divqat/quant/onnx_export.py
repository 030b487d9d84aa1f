"""ONNX QDQ export of a deployed model, and an onnxruntime runner that needs no training code."""

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from divqat.errors import DivqatError
from divqat.quant.onnx_graph import rewrite_for_onnxruntime


class Probabilities(nn.Module):
    """The deployment contract's output: class probabilities, not logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, activation_bits: int = 8) -> None:
    """float32 NCHW pixels in [0, 1] -> probabilities, any batch size; the QDQ graph rewritten so
    that onnxruntime computes the trained clamps and runs float layers on constant weights."""
    example = (torch.rand(2, *input_shape),)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            Probabilities(model), example, dynamo=True, dynamic_shapes=({0: batch},), verbose=False
        )
    onnx.save(rewrite_for_onnxruntime(program.model_proto, activation_bits), str(path))


class OnnxModel:
    """A deployed model run by onnxruntime: `predict_proba(images) -> probabilities`."""

    def __init__(self, path: Path, optimize: bool = True):
        """optimize=False runs the graph's QuantizeLinear/DequantizeLinear nodes literally (the
        reference semantics, for checks); the default fuses them into onnxruntime's int8 kernels."""
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for bad files
            raise DivqatError(f"{path}: not a valid ONNX model ({str(e).splitlines()[0][:200]})") from None
        self.input_name = self.session.get_inputs()[0].name

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One image's shape (C, H, W), as the file declares it."""
        return tuple(self.session.get_inputs()[0].shape[1:])

    @property
    def num_classes(self) -> int:
        return self.session.get_outputs()[0].shape[-1]

    def predict_proba(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        out = [
            self.session.run(None, {self.input_name: images[i : i + batch_size].numpy()})[0]
            for i in range(0, len(images), batch_size)
        ]
        return torch.from_numpy(np.concatenate(out))
