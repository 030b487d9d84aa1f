"""quant/pt2e.py: convert folds batch norm only for the kinds of convolution the graph holds."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchao.quantization.pt2e import qat_utils

from divqat.quant.pt2e import export_graph, folding_only_present_convs

KINDS = (F.conv1d, F.conv2d, F.conv_transpose1d, F.conv_transpose2d)


def folds_reaching_torchao(graph, monkeypatch) -> list:
    """The kinds of convolution whose folding reaches torchao's helper inside the block."""
    reached = []
    monkeypatch.setattr(qat_utils, "_fold_conv_bn_qat_helper", lambda m, conv_fn, *a, **k: reached.append(conv_fn) or m)
    recorder = qat_utils._fold_conv_bn_qat_helper
    with folding_only_present_convs(graph):
        for conv_fn in (*KINDS, F.linear):  # F.linear: a kind it does not know folds as torchao does
            assert qat_utils._fold_conv_bn_qat_helper(graph, conv_fn, (), is_cuda=False) is graph
    assert qat_utils._fold_conv_bn_qat_helper is recorder  # put back
    return reached


def test_only_the_convolutions_present_are_folded(monkeypatch):
    conv2d = export_graph(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), (1, 6, 6), train=True)
    assert folds_reaching_torchao(conv2d, monkeypatch) == [F.conv2d, F.linear]
    both = export_graph(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 2, 3)), (1, 6, 6), train=True)
    assert folds_reaching_torchao(both, monkeypatch) == [F.conv2d, F.conv_transpose2d, F.linear]


def test_a_graph_without_a_known_convolution_folds_as_torchao_does(monkeypatch):
    linear = export_graph(nn.Sequential(nn.Flatten(), nn.Linear(36, 2), nn.BatchNorm1d(2)), (1, 6, 6), train=True)
    assert folds_reaching_torchao(linear, monkeypatch) == [*KINDS, F.linear]


def test_the_helper_is_put_back_after_an_error():
    helper = qat_utils._fold_conv_bn_qat_helper
    graph = export_graph(nn.Conv2d(1, 2, 3), (1, 6, 6), train=True)
    with pytest.raises(KeyError), folding_only_present_convs(graph):
        raise KeyError("inside")
    assert qat_utils._fold_conv_bn_qat_helper is helper
    assert torch.ops.aten.conv2d.default in {n.target for n in graph.graph.nodes}
