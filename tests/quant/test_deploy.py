"""Deployed artefacts: ONNX vs in-process int8 kernels, reloading, bit widths, file errors."""

import onnx
import pytest
import torch

from divqat import artifacts, metrics, pipeline
from divqat.errors import DivqatError
from divqat.quant import compile_int8
from divqat.train import predict_proba
from divqat.train.victim import VictimConfig

BASE = dict(epochs=1, fp_epochs=3, batch_size=64, lr=1e-3, seed=1)


@pytest.fixture(scope="module")
def run_dirs(tiny_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    fp = root / "fp"
    pipeline.train(VictimConfig(method="fp", **BASE), fp, data_root=tiny_root, quiet=True)
    runs = {"fp": fp}
    for name, overrides in {
        "divqat": dict(method="divqat", alpha=0.5),
        "ptq": dict(method="ptq"),
        "qat4": dict(method="qat", weight_bits=4, activation_bits=7),
    }.items():
        runs[name] = root / name
        pipeline.train(VictimConfig(**BASE, **overrides), runs[name], data_root=tiny_root, fp_from=fp, quiet=True)
    return runs


def test_metrics_file(run_dirs):
    m = artifacts.read_json(run_dirs["divqat"] / artifacts.METRICS)
    for key in (
        "method",
        "alpha",
        "bits",
        "fp_accuracy",
        "int8_accuracy",
        "kl_fp_int8",
        "mean_max_prob",
        "epoch_seconds",
    ):
        assert m[key] is not None, key
    assert m["method"] == "divqat" and m["alpha"] == 0.5 and m["bits"] == 8


def test_onnx_is_a_qdq_graph_with_probabilities(run_dirs, tiny_splits):
    ops = {n.op_type for n in onnx.load(run_dirs["divqat"] / artifacts.ONNX).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Softmax"} <= ops
    probs = artifacts.load_onnx(run_dirs["divqat"]).predict_proba(tiny_splits.test.images[:7])
    assert probs.shape == (7, 10) and torch.allclose(probs.sum(-1), torch.ones(7), atol=1e-5)


def test_onnx_agrees_with_in_process_int8_kernels(run_dirs, tiny_splits):
    x = tiny_splits.test.images
    int8 = compile_int8(artifacts.load_quantized(run_dirs["divqat"]))
    with torch.no_grad():
        in_process = torch.softmax(int8(x), -1)
    onnx_probs = artifacts.load_onnx(run_dirs["divqat"]).predict_proba(x)
    assert metrics.agreement(in_process, onnx_probs) >= 0.995


@pytest.mark.parametrize("name", ["divqat", "ptq", "qat4"])
def test_reload_gives_identical_predictions(run_dirs, tiny_splits, name):
    x = tiny_splits.test.images
    first = predict_proba(artifacts.load_quantized(run_dirs[name]), x)
    again = predict_proba(artifacts.load_quantized(run_dirs[name]), x)
    assert torch.equal(first, again)
    a, b = artifacts.load_onnx(run_dirs[name]).predict_proba(x), artifacts.load_onnx(run_dirs[name]).predict_proba(x)
    assert torch.equal(a, b)
    assert metrics.agreement(first, a) >= 0.995


def test_reloaded_fp_model_is_the_trained_one(run_dirs, tiny_splits):
    m = artifacts.read_json(run_dirs["fp"] / artifacts.METRICS)
    probs = predict_proba(artifacts.load_fp(run_dirs["fp"]), tiny_splits.test.images)
    assert metrics.accuracy(probs, tiny_splits.test.labels) == pytest.approx(m["fp_accuracy"])


def test_bit_widths_reach_the_deployed_graph(run_dirs):
    graph = onnx.load(run_dirs["qat4"] / artifacts.ONNX).graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    weights = [consts[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in consts]
    int_weights = [w for w in weights if w.dtype.kind == "i" and w.ndim >= 2]
    assert int_weights and all(w.min() >= -8 and w.max() <= 7 for w in int_weights)
    zero_points = [consts[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    scales_8 = onnx.load(run_dirs["divqat"] / artifacts.ONNX)
    assert zero_points and scales_8 is not None
    config, meta = artifacts.load_config(run_dirs["qat4"])
    assert (config.weight_bits, meta["activation_bits"]) == (4, 7)


def test_corrupt_files_are_one_line_errors(run_dirs, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dirs["divqat"], bad)
    (bad / artifacts.QUANT).write_bytes((bad / artifacts.QUANT).read_bytes()[:100])
    with pytest.raises(DivqatError, match="corrupt or truncated"):
        artifacts.load_quantized(bad)
    (bad / artifacts.ONNX).write_bytes(b"\x00garbage")
    with pytest.raises(DivqatError, match="not a valid ONNX model"):
        artifacts.load_onnx(bad)
    (bad / artifacts.CONFIG).write_text("{not json")
    with pytest.raises(DivqatError, match="unreadable"):
        artifacts.load_config(bad)
    with pytest.raises(DivqatError, match="not a divqat run directory"):
        artifacts.load_config(tmp_path)


def test_black_box_backends_agree(run_dirs, tiny_splits):
    from divqat.blackbox import load_backend

    x = tiny_splits.test.images
    onnx_probs = load_backend(run_dirs["divqat"], "onnx")(x)
    int8_probs = load_backend(run_dirs["divqat"], "int8")(x)
    assert metrics.agreement(onnx_probs, int8_probs) >= 0.995
    with pytest.raises(DivqatError, match="unknown backend"):
        load_backend(run_dirs["divqat"], "tpu")
