"""The PT2E flow of torchao: export -> prepare (QAT or PTQ) -> train or calibrate -> convert.

Weights are stored as int8 even at 4 bits (values restricted to [-8, 7]), so the same x86
int8 kernels and the same ONNX QDQ graph serve both widths.
"""

import copy
import dataclasses

import torch
from torch import nn
from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

from divqat.quant.config import QuantConfig

# Graphs are exported with a symbolic batch size, so one prepared model trains and runs on any batch.
BATCH = torch.export.Dim("batch", min=1, max=1 << 20)


def quantizer(config: QuantConfig, is_qat: bool) -> X86InductorQuantizer:
    config = config.resolved()
    spec = get_default_x86_inductor_quantization_config(is_qat=is_qat)
    weight = dataclasses.replace(
        spec.weight, quant_min=-(1 << (config.weight_bits - 1)), quant_max=(1 << (config.weight_bits - 1)) - 1
    )
    act_max = (1 << config.activation_bits) - 1
    spec = dataclasses.replace(
        spec,
        weight=weight,
        input_activation=dataclasses.replace(spec.input_activation, quant_max=act_max),
        output_activation=dataclasses.replace(spec.output_activation, quant_max=act_max),
    )
    return X86InductorQuantizer().set_global(spec)


def export_graph(model: nn.Module, input_shape: tuple[int, ...], train: bool) -> torch.fx.GraphModule:
    """torch.export with a dynamic batch; train=True captures batch norm in training form (QAT)."""
    model = model.train(train)
    example = (torch.rand(2, *input_shape),)
    return torch.export.export(model, example, dynamic_shapes=({0: BATCH},)).module()


def prepare(model: nn.Module, input_shape: tuple[int, ...], config: QuantConfig, qat: bool) -> torch.fx.GraphModule:
    """A copy of `model` with fake-quantizers (QAT) or observers (PTQ) inserted.

    torch.export shares parameter storage with the exported module: without the copy, QAT
    would also train the FP model it started from (the frozen DivQAT teacher).
    """
    graph = export_graph(copy.deepcopy(model), input_shape, train=qat)
    q = quantizer(config, is_qat=qat)
    return prepare_qat_pt2e(graph, q) if qat else prepare_pt2e(graph, q)


def set_mode(model: nn.Module, train: bool) -> nn.Module:
    """model.train()/eval() that also works on exported graphs, where those calls are refused."""
    inner = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    if isinstance(inner, torch.fx.GraphModule):
        (move_exported_model_to_train if train else move_exported_model_to_eval)(inner)
    else:
        model.train(train)
    return model


@torch.no_grad()
def calibrate(prepared: torch.fx.GraphModule, images: torch.Tensor, batch_size: int = 512) -> None:
    set_mode(prepared, train=False)
    for start in range(0, len(images), batch_size):
        prepared(images[start : start + batch_size])


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The quantized graph (quantize/dequantize around integer-valued weights)."""
    set_mode(prepared, train=False)
    return convert_pt2e(prepared)


def compile_int8(converted: torch.fx.GraphModule):
    """Lower to oneDNN int8 kernels with Inductor. Static shapes: the dynamic-batch lowering of
    quantized convolutions fails a stride check in torch 2.13, so each batch size compiles once."""
    torch._inductor.config.freezing = True  # folds weights into packed int8 constants
    return torch.compile(converted, dynamic=False)
