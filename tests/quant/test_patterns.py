"""quant/patterns.py: torchao's pattern graphs exported once per process, handed out as copies."""

import pytest
import torch
import torch.nn.functional as F
from torchao.quantization.pt2e import export_utils, qat_utils, utils

from divqat.quant import patterns
from divqat.quant.patterns import Uncacheable, cached_patterns, signature


def scaled(factor: float, inplace: bool) -> export_utils.WrapperModule:
    """A pattern as torchao writes one: a closure over its settings, in torchao's wrapper."""

    def pattern(x):
        return F.relu(x * factor, inplace=inplace)

    return export_utils.WrapperModule(pattern)


def test_a_pattern_is_keyed_by_its_code_closure_and_input_shapes_not_values():
    x, y = torch.randn(1, 3), torch.randn(1, 3)
    same = signature((scaled(2.0, False), (x,)))
    assert same == signature((scaled(2.0, False), (y,)))  # a fresh closure holding the same values
    assert signature(scaled(2.0, False)) != signature(scaled(3.0, False))
    assert signature(scaled(2.0, False)) != signature(scaled(2.0, True))
    assert signature((x,)) != signature((torch.randn(1, 4),)) != signature((x.double(),))
    assert signature(1) != signature(True) and signature(1) != signature(1.0)


def test_what_cannot_be_read_from_its_value_is_not_cached():
    holder = torch.randn(3)
    with pytest.raises(Uncacheable):
        signature(
            export_utils.WrapperModule(lambda x: x + holder)
        )  # a tensor in the closure: its values reach the graph
    with pytest.raises(Uncacheable):
        signature(object())


def test_each_pattern_is_exported_once_and_every_caller_gets_its_own_copy(monkeypatch):
    exports = []
    real = patterns._export
    monkeypatch.setattr(patterns, "_export", lambda *a, **k: exports.append(1) or real(*a, **k))
    monkeypatch.setattr(patterns, "_EXPORTED", {})
    example = (torch.randn(1, 3),)
    with cached_patterns():
        first = qat_utils._get_aten_graph_module_for_pattern(scaled(2.0, False), example)
        relu = next(n for n in first.graph.nodes if "relu" in str(n.target))
        relu.target = torch.ops.aten.sigmoid.default  # a pass rewrites the graph it was given
        first.recompile()
        with cached_patterns():  # nested: still the cache
            second = utils._get_aten_graph_module_for_pattern(scaled(2.0, False), (torch.randn(1, 3),))
        uncached = qat_utils._get_aten_graph_module_for_pattern(export_utils.WrapperModule(torch.nn.ReLU()), example)
    assert len(exports) == 2  # the second call of the same pattern was a copy; the module is not cacheable
    assert any("relu" in str(n.target) for n in second.graph.nodes)  # the first caller's edit did not reach it
    assert torch.equal(second(example[0]), F.relu(example[0] * 2.0)) and uncached is not None
    assert qat_utils._get_aten_graph_module_for_pattern is real and utils._get_aten_graph_module_for_pattern is real
