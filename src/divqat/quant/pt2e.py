"""The PT2E flow of torchao: export -> prepare (QAT or PTQ) -> train or calibrate -> convert.

Weights are stored as int8 even at 4 bits (values restricted to [-8, 7]), so the same x86
int8 kernels and the same ONNX QDQ graph serve both widths.
"""

import copy
import dataclasses
import weakref
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train, qat_utils
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
    QUANT_ANNOTATION_KEY,
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
    get_input_act_qspec,
)

from divqat.quant.config import QuantConfig
from divqat.quant.patterns import cached_patterns

# Graphs are exported with a symbolic batch size, so one prepared model trains and runs on any batch.
BATCH = torch.export.Dim("batch", min=1, max=1 << 20)


class ResidualQuantizer(X86InductorQuantizer):
    """The x86 recipe, plus both inputs of every residual add quantized.

    X86InductorQuantizer leaves the convolution before a residual add in float (oneDNN fuses the
    add into that convolution). onnxruntime cannot fuse it, so in the deployed ONNX model those
    convolutions ran in float on dequantized weights, with layout changes around them: ResNet-20
    int8 was slower than FP32 in onnxruntime. Quantizing the add's other input too makes every
    convolution a QLinearConv and every add a QLinearAdd (docs/benchmarks.md). LeNet-5 has no add
    and is unchanged."""

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        super().annotate(model)
        spec = get_input_act_qspec(self.global_config)
        for node in model.graph.nodes:
            annotation = node.meta.get(QUANT_ANNOTATION_KEY)
            if node.target is torch.ops.aten.add.Tensor and annotation is not None and self.global_config:
                for arg in node.args[:2]:
                    if isinstance(arg, torch.fx.Node) and arg not in annotation.input_qspec_map:
                        annotation.input_qspec_map[arg] = spec
        return model


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
    return ResidualQuantizer().set_global(spec)


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
    with cached_patterns():
        return prepare_qat_pt2e(graph, q) if qat else prepare_pt2e(graph, q)


def set_mode(model: nn.Module, train: bool) -> nn.Module:
    """model.train()/eval() that also works on exported graphs, where those calls are refused."""
    inner = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    if isinstance(inner, torch.fx.GraphModule):
        with cached_patterns():
            (move_exported_model_to_train if train else move_exported_model_to_eval)(inner)
    else:
        model.train(train)
    return model


@contextmanager
def frozen_observers(model: nn.Module):
    """Fake quantizers keep quantizing but stop updating their ranges (a no-op on FP models)."""
    quantizers = [m for m in model.modules() if hasattr(m, "observer_enabled")]
    states = [m.observer_enabled.clone() for m in quantizers]
    for m in quantizers:
        m.observer_enabled.fill_(0)
    try:
        yield model
    finally:
        for m, state in zip(quantizers, states, strict=True):
            m.observer_enabled.copy_(state)


def deployed_forward(model: nn.Module):
    """`model`'s forward as the deployed model computes it, for inputs that must leave no trace
    (DivQAT's outliers): batch norm on its running statistics rather than the batch's, and no
    buffer (running statistics, batch counts) changed; gradients reach the same parameters.

    An exported QAT graph cannot switch batch norm per call (moving it to eval rewrites the graph),
    so this is an eval-mode twin of the graph whose parameters and buffers are the graph's own
    tensors: what training changes, the twin sees. Freeze observers around it (frozen_observers)
    so that fake quantizers keep their ranges too."""
    inner = getattr(model, "_orig_mod", model)
    if not isinstance(inner, torch.fx.GraphModule):
        return lambda x: _in_eval_mode(model, x)
    twin = copy.deepcopy(inner)
    with cached_patterns():
        move_exported_model_to_eval(twin)
    for name, parameter in inner.named_parameters(remove_duplicate=False):
        owner, leaf = _owner(twin, name)
        owner._parameters[leaf] = parameter
    for name, buffer in inner.named_buffers(remove_duplicate=False):
        owner, leaf = _owner(twin, name)
        # The eval graph still counts batches (an add_ the rewrite leaves): that count stays its own.
        owner._buffers[leaf] = buffer.clone() if leaf == "num_batches_tracked" else buffer
    return twin


_DEPLOYED: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


@contextmanager
def outlier_forward(model: nn.Module):
    """`with outlier_forward(qat_model) as forward: logits = forward(outliers)`: the model's
    forward for inputs that must leave no trace (DivQAT's outliers), in your own training loop:
    batch norm on its running statistics, fake quantizers quantizing without moving their
    ranges, no buffer changed; gradients reach the model's own parameters. The eval-mode twin
    (`deployed_forward`) is made once per model and kept while the model lives."""
    twin = _DEPLOYED.get(model)
    if twin is None:
        twin = _DEPLOYED[model] = deployed_forward(model)
    with frozen_observers(model):
        yield twin


def _owner(module: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    path, _, leaf = dotted.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


def _in_eval_mode(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return model(x)
    finally:
        for m, training in modes:
            m.train(training)


@torch.no_grad()
def calibrate(prepared: torch.fx.GraphModule, images: torch.Tensor, batch_size: int = 512) -> None:
    set_mode(prepared, train=False)
    for start in range(0, len(images), batch_size):
        prepared(images[start : start + batch_size])


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The quantized graph (quantize/dequantize around integer-valued weights)."""
    set_mode(prepared, train=False)
    with cached_patterns(), folding_only_present_convs(prepared):
        return convert_pt2e(prepared)


@contextmanager
def folding_only_present_convs(graph: torch.fx.GraphModule):
    """convert_pt2e folds a QAT graph's batch norms into its convolutions by exporting, for each
    of conv1d, conv2d, conv_transpose1d and conv_transpose2d, 24 small pattern graphs and
    matching them - about a hundred torch.export calls, 34 s of the cnn's 35 s convert on a slow
    2-core machine, whatever the model's size (upstream named it slow and left caching the
    patterns for later: pytorch#116440; docs/benchmarks.md).
    Within this block the patterns of a kind of convolution that the graph does not hold are not
    exported: a kind with no node in the graph has nothing to match, so the folded graph is the
    same (tests/quant/test_pt2e.py). A graph with the generic aten.convolution, or with no
    convolution, folds as torchao does. Not thread-safe (it swaps a module attribute): divqat
    converts one model per process at a time."""
    present = {
        n.target.overloadpacket.__name__ for n in graph.graph.nodes if isinstance(n.target, torch._ops.OpOverload)
    }
    kinds = {F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv_transpose1d: "conv_transpose1d",
             F.conv_transpose2d: "conv_transpose2d"}  # fmt: skip
    fold = qat_utils._fold_conv_bn_qat_helper
    if "convolution" in present or not present & set(kinds.values()):
        yield
        return

    def fold_present(m, conv_fn, *args, **kwargs):
        if conv_fn in kinds and kinds[conv_fn] not in present:
            return m  # no convolution of this kind: nothing to fold
        return fold(m, conv_fn, *args, **kwargs)

    qat_utils._fold_conv_bn_qat_helper = fold_present
    try:
        yield
    finally:
        qat_utils._fold_conv_bn_qat_helper = fold


QUANTIZE = torch.ops.quantized_decomposed.quantize_per_tensor.default


def clamp_before_narrow_quantize(converted: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of the graph with an explicit clamp at (quant_max - z) * s before every quantize
    narrower than its uint8 type (7-bit activations). A no-op for the reference graph, which
    clamps anyway; but Inductor's fused oneDNN linear + ReLU + quantize saturates at 255 and
    ignores quant_max (measured: 0.02 of probability off on a toy model), and the explicit clamp
    keeps that fusion from dropping it."""
    graph = copy.deepcopy(converted)
    for node in list(graph.graph.nodes):
        if node.target is not QUANTIZE:
            continue
        x, scale, zero, _, quant_max, dtype = node.args
        if dtype == torch.uint8 and quant_max < 255 and not isinstance(scale, torch.fx.Node):
            with graph.graph.inserting_before(node):
                clamped = graph.graph.call_function(torch.ops.aten.clamp_max.default, (x, (quant_max - zero) * scale))
            node.replace_input_with(x, clamped)
    graph.recompile()
    return graph


class Int8Kernels:
    """A converted graph lowered to oneDNN int8 kernels by Inductor, for any batch size.

    The dynamic-batch lowering of quantized convolutions fails a stride check in torch 2.13, and
    static shapes recompile per batch size until torch's recompile limit (8), past which Dynamo
    silently falls back to the eager Q/DQ graph. So batches are padded to the next power of two
    (at most `len(BUCKETS)` compiled shapes, under a limit raised to fit them) and larger ones
    are split: every call runs the int8 kernels. Rows are independent in eval mode, so padding
    never changes a row's answer.
    """

    BUCKETS = tuple(1 << i for i in range(10))  # 1 ... 512

    def __init__(self, converted: torch.fx.GraphModule):
        torch._inductor.config.freezing = True  # folds weights into packed int8 constants
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, len(self.BUCKETS) + 2)
        self.converted = converted
        self.compiled = torch.compile(clamp_before_narrow_quantize(converted), dynamic=False)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in images.split(self.BUCKETS[-1]):
            n = len(chunk)
            size = next(b for b in self.BUCKETS if b >= n)
            if size > n:
                chunk = torch.cat([chunk, chunk.new_zeros(size - n, *chunk.shape[1:])])
            out.append(self.compiled(chunk)[:n])
        return torch.cat(out)


def compile_int8(converted: torch.fx.GraphModule) -> Int8Kernels:
    return Int8Kernels(converted)
