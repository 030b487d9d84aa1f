"""Rewrites of the exported QDQ graph, so that onnxruntime computes what was trained, fast.

1. 7-bit activations. The exporter turns `quantize_per_tensor(x, s, z, 0, 127, uint8)` into an
   ONNX QuantizeLinear, which has no quant_min/quant_max and saturates at the type's 255: every
   activation past the trained range would run 128 steps further than in training. A float
   `Min(x, (127 - z) * s)` before the QuantizeLinear restores the clamp exactly (the lower clamp
   at 0 is the uint8 type's own). It costs speed: onnxruntime no longer fuses those layers into
   QLinearConv / QGemm (docs/benchmarks.md).
2. Float layers read dequantized constants. A weight DequantizeLinear whose layer does not end in
   a QuantizeLinear (the last Gemm, a convolution feeding a residual add) is not fused by
   onnxruntime: it re-dequantizes the weights on every call and, since the weight is no constant,
   the layer misses the NCHWc kernels. Folding it into a float initializer is exact (w - z) * s.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

PASS_THROUGH = ("Relu",)  # ops between a layer and its QuantizeLinear that onnxruntime fuses away


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def clamp_activations(model: onnx.ModelProto, bits: int) -> int:
    """Insert Min(x, (2^bits - 1 - z) * s) before every activation QuantizeLinear (uint8 zero
    point); returns how many were clamped. Nothing to do at 8 bits."""
    if bits == 8:
        return 0
    values, qmax, nodes, added = constants(model), (1 << bits) - 1, [], 0
    for node in model.graph.node:
        zero = values.get(node.input[2]) if node.op_type == "QuantizeLinear" and len(node.input) > 2 else None
        if zero is not None and zero.dtype == np.uint8:
            if zero.size != 1 or int(zero) > qmax:
                raise ValueError(f"{node.name}: zero point {zero} outside the {bits}-bit range")
            bound = f"{node.name or node.output[0]}_max"
            limit = np.float32(qmax - int(zero)) * values[node.input[1]].astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(limit, np.float32), bound))
            nodes.append(helper.make_node("Min", [node.input[0], bound], [f"{bound}_in"], name=f"{bound}_clamp"))
            node.input[0] = f"{bound}_in"
            added += 1
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return added


def ends_in_quantize(output: str, users: dict[str, list[onnx.NodeProto]]) -> bool:
    nexts = users.get(output, [])
    if len(nexts) != 1:
        return False
    if nexts[0].op_type == "QuantizeLinear":
        return True
    return nexts[0].op_type in PASS_THROUGH and ends_in_quantize(nexts[0].output[0], users)


def fold_float_weights(model: onnx.ModelProto) -> int:
    """Replace constant DequantizeLinear nodes that feed unfusable layers by float initializers."""
    values, users = constants(model), consumers(model)
    keep, folded = [], 0
    for node in model.graph.node:
        inputs = list(node.input)
        if node.op_type == "DequantizeLinear" and all(name in values for name in inputs):
            layers = users.get(node.output[0], [])
            if layers and not any(ends_in_quantize(layer.output[0], users) for layer in layers):
                model.graph.initializer.append(numpy_helper.from_array(dequantize(node, values), node.output[0]))
                folded += 1
                continue
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return folded


def dequantize(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> np.ndarray:
    """(w - z) * s in float32, as DequantizeLinear computes it (per channel along `axis`)."""
    w, s = values[node.input[0]], values[node.input[1]].astype(np.float32)
    z = values[node.input[2]] if len(node.input) > 2 else np.zeros_like(s, dtype=w.dtype)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * w.ndim
    if s.ndim:
        shape[axis % w.ndim] = -1
    centred = (w.astype(np.int32) - z.astype(np.int32).reshape(shape)).astype(np.float32)
    return (centred * s.reshape(shape)).astype(np.float32)


def rewrite_for_onnxruntime(model: onnx.ModelProto, activation_bits: int) -> onnx.ModelProto:
    clamp_activations(model, activation_bits)
    fold_float_weights(model)
    drop_unused_initializers(model)
    onnx.checker.check_model(model)
    return model


def node_inputs(graph: onnx.GraphProto) -> set[str]:
    """Every name a node reads, in this graph and in the subgraphs of its nodes (If, Loop...)."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                names |= node_inputs(sub)
    return names


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Initializers no node reads (left by the exporter and by folding): onnxruntime warns about
    each one, in colour, when a user loads the file."""
    used = node_inputs(model.graph) | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
