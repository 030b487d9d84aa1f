"""The pattern graphs torchao's PT2E passes export, exported once per process.

Moving an exported graph between train and eval mode (dropout, batch norm), fusing conv + batch
norm for QAT and folding it at convert all rewrite the graph by matching small pattern graphs,
which torchao makes by torch.export-ing a pattern function on every call: six exports for each
move between train and eval (1-2 s on a slow 2-core machine, and a QAT epoch makes two), about
a hundred for a convert. The patterns are the same every time - the same function, closure and
example shapes - so within `cached_patterns()` each is exported once and handed out as a copy
(the passes rewrite the graphs they are given). What decides a pattern is read from the call:
the function's code, the values its closure and defaults hold, and the example inputs' shapes,
dtypes and devices (their values do not reach the graph: torch.export traces tensors
symbolically); a call with anything else in it (a tensor in a closure, an object) is exported
as torchao does. The rewritten graphs are the same (benchmarks/convert_fold.py: same nodes,
bit-identical outputs and parameters). Not thread-safe (it swaps module attributes): divqat
quantizes one model per process at a time.
"""

import copy
import types
import warnings
from contextlib import contextmanager

import torch
from torchao.quantization.pt2e import export_utils, qat_utils, utils

_export = utils._get_aten_graph_module_for_pattern
_EXPORTED: dict = {}  # key (signature) -> the exported pattern, never handed out itself
_MODULES = (utils, qat_utils)  # the modules that call it by their own global name


class Uncacheable(Exception):
    """A pattern call holding something whose effect on the graph is not read from its value."""


def signature(value, depth: int = 0):
    """What of `value` can reach an exported pattern, as a hashable key. Depth 0 is the call's
    arguments, where tensors are example inputs, traced by shape; deeper (a closure, a default)
    a tensor's values would be baked into the graph: not cacheable."""
    if isinstance(value, torch.Tensor) and depth == 0:
        return ("tensor", tuple(value.shape), value.dtype, value.device.type, value.requires_grad)
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype)):
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(signature(v, depth) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, signature(v, depth)) for k, v in sorted(value.items())))
    if type(value) is export_utils.WrapperModule:
        return ("wrapper", signature(value.fn, depth + 1))
    if isinstance(value, types.BuiltinFunctionType):  # torch's own functions (F.conv2d): fixed objects
        return ("builtin", value)
    if isinstance(value, types.FunctionType) and depth < 5:
        try:
            cells = tuple(signature(c.cell_contents, depth + 1) for c in value.__closure__ or ())
        except ValueError:  # a cell not yet bound
            raise Uncacheable("an empty closure cell") from None
        defaults = signature(value.__defaults__ or (), depth + 1), signature(value.__kwdefaults__ or {}, depth + 1)
        return ("function", value.__code__, cells, defaults)
    raise Uncacheable(type(value).__name__)


def _exported_once(pattern, example_inputs, is_cuda: bool = False, **kwargs):
    try:
        key = signature(pattern, 1), signature((tuple(example_inputs), is_cuda, kwargs))
    except Uncacheable:
        return _export(pattern, example_inputs, is_cuda, **kwargs)
    if key not in _EXPORTED:
        _EXPORTED[key] = _export(pattern, example_inputs, is_cuda, **kwargs)
    with warnings.catch_warnings():  # copying a graph's pytree spec warns of torch's own deprecation
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(_EXPORTED[key])


@contextmanager
def cached_patterns():
    """Within the block, torchao's PT2E passes export each pattern graph once per process."""
    if all(m._get_aten_graph_module_for_pattern is _exported_once for m in _MODULES):
        yield  # already inside one
        return
    saved = [m._get_aten_graph_module_for_pattern for m in _MODULES]
    for m in _MODULES:
        m._get_aten_graph_module_for_pattern = _exported_once
    try:
        yield
    finally:
        for m, export in zip(_MODULES, saved, strict=True):
            m._get_aten_graph_module_for_pattern = export
