"""Deployed artefacts: ONNX vs in-process int8 kernels, reloading, bit widths, file errors."""

import onnx
import pytest
import torch

from divqat import artifacts, metrics, pipeline
from divqat.configs import VictimConfig
from divqat.errors import DivqatError
from divqat.quant import OnnxModel, QuantConfig, compile_int8, cpu_has_vnni, prepare, set_mode
from divqat.train import predict_proba

BASE = dict(epochs=1, fp_epochs=3, batch_size=64, lr=1e-3, seed=1)


WIDTHS = {"w8a8": (8, 8), "w8a7": (8, 7), "w4a8": (4, 8), "w4a7": (4, 7)}  # weight, activation bits


@pytest.fixture(scope="module")
def run_dirs(tiny_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    fp = root / "fp"
    pipeline.train(VictimConfig(method="fp", **BASE), fp, data_root=tiny_root)
    runs = {"fp": fp}
    variants = {"divqat": dict(method="divqat", alpha=0.5), "ptq": dict(method="ptq")}
    for name, (w, a) in WIDTHS.items():
        variants[name] = dict(method="qat", weight_bits=w, activation_bits=a)
    for name, overrides in variants.items():
        runs[name] = root / name
        pipeline.train(VictimConfig(**BASE, **overrides), runs[name], data_root=tiny_root, fp_from=fp)
    return runs


def past_range_inputs(images: torch.Tensor) -> torch.Tensor:
    """Inputs that drive activations past the range calibrated on the training images."""
    g = torch.Generator().manual_seed(0)
    binary = (torch.rand(64, *images.shape[1:], generator=g) > 0.5).float()
    return torch.cat([1 - images, binary, torch.ones(4, *images.shape[1:])])


def steps_past_quant_max(run) -> callable:
    """images -> how many activation values the trained graph clamps at quant_max (it would
    store round(x / s) + z > quant_max): proof that the inputs exercise the clamp."""
    config, meta = artifacts.load_config(run)
    prepared = artifacts.load_state(
        prepare(artifacts.fresh_model(config, meta), tuple(meta["input_shape"]),
                QuantConfig(config.weight_bits, meta["activation_bits"]), qat=True),
        run / artifacts.QUANT,
    )  # fmt: skip
    set_mode(prepared, train=False)
    quantizers = [m for m in prepared.children() if getattr(m, "qscheme", None) == torch.per_tensor_affine]
    counts = []

    def count(module, inputs, output):
        x = inputs[0]
        counts.append(int((torch.round(x / module.scale) + module.zero_point > module.quant_max).sum()))

    for q in quantizers:
        q.register_forward_hook(count)

    def measure(images):
        counts.clear()
        with torch.no_grad():
            prepared(images)
        return sum(counts)

    return measure


LOAD_IN_ONNXRUNTIME = """
import sys, onnxruntime
onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
"""


def test_the_deployed_file_loads_in_plain_onnxruntime_without_a_warning(run_dirs):
    """What the README promises: model.onnx runs in onnxruntime without divqat, and says nothing
    (the exporter left initializers no node used: onnxruntime warned about each, in colour)."""
    import subprocess
    import sys

    import onnx

    for name, run in run_dirs.items():
        model = onnx.load(str(run / "model.onnx"))
        used = {i for node in model.graph.node for i in node.input}
        assert [t.name for t in model.graph.initializer if t.name not in used] == [], name
        proc = subprocess.run([sys.executable, "-c", LOAD_IN_ONNXRUNTIME, str(run / "model.onnx")],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", (name, proc.stderr[:300])


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


def test_a_run_of_8_bit_activations_loaded_without_vnni_is_warned_of(run_dirs, monkeypatch, caplog):
    for vnni in (False, True):
        monkeypatch.setattr(artifacts, "cpu_has_vnni", lambda v=vnni: v)
        caplog.clear()
        for name in WIDTHS:
            artifacts.load_onnx(run_dirs[name])
        warned = [r.getMessage() for r in caplog.records if "VNNI" in r.getMessage()]
        assert len(warned) == (0 if vnni else 2) and all("a8" in m for m in warned), warned  # w8a8 and w4a8


@pytest.mark.parametrize("name", WIDTHS)
def test_deployed_onnx_computes_the_trained_graph(run_dirs, tiny_splits, name):
    """Element by element, on the test slice and on inputs past the calibrated range, three
    implementations of the trained quantized graph agree: the graph itself in float Q/DQ ops
    (the reference), the shipped ONNX file in onnxruntime (run literally, and with its fused int8
    kernels) and the in-process oneDNN int8 kernels. Tolerances: 2e-3 of probability for the
    literal file (float rounding can flip one requantization), 0.02 (mean 1e-3) for the fused
    integer pipelines, which requantize slightly differently. Without VNNI the fused pipelines'
    u8 x s8 products saturate int16 at 8-bit activations (max 0.10 of probability on an AMD EPYC)
    - why 7 bits are the default there (QuantConfig.resolved): they are compared at 7 bits only."""
    run = run_dirs[name]
    fused = cpu_has_vnni() or WIDTHS[name][1] == 7
    converted = artifacts.load_quantized(run)
    int8 = compile_int8(converted)
    literal, shipped = OnnxModel(run / artifacts.ONNX, optimize=False), artifacts.load_onnx(run)
    beyond = past_range_inputs(tiny_splits.test.images)
    assert steps_past_quant_max(run)(beyond) > 100  # the clamp is exercised
    for images in (tiny_splits.test.images, beyond):
        reference = predict_proba(converted, images)
        assert (literal.predict_proba(images) - reference).abs().max() <= 2e-3
        top2 = reference.topk(2, -1).values
        clear = top2[:, 0] - top2[:, 1] > 0.01  # near-ties may flip either way
        for answers in (shipped.predict_proba(images), predict_proba(int8, images)) if fused else ():
            difference = (answers - reference).abs()
            assert difference.max() <= 0.02 and difference.mean() <= 1e-3
            assert (answers.argmax(-1) == reference.argmax(-1))[clear].all()


def test_int8_kernels_serve_any_batch_size(run_dirs, tiny_splits, monkeypatch):
    """20 batch sizes, more than torch's recompile limit: every one runs the compiled kernels
    (a fallback to the eager graph would raise here) and gives the reference answers."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    converted = artifacts.load_quantized(run_dirs["w8a8"])
    int8 = compile_int8(converted)
    images = tiny_splits.test.images
    sizes = [1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 23, 31, 32, 33, 40, 47, 57, 64, 300, 600]
    for n in sizes:
        with torch.no_grad():
            got, want = int8(images[:n]), converted(images[:n])
        assert got.shape == want.shape and (got.softmax(-1) - want.softmax(-1)).abs().max() <= 0.06, n


@pytest.mark.parametrize("name", ["divqat", "ptq", "w4a7"])
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
    # 8-bit activations: layers stay QDQ (fused by onnxruntime), weights stored as 4-bit integers.
    graph = onnx.load(run_dirs["w4a8"] / artifacts.ONNX).graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    weights = [consts[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in consts]
    int_weights = [w for w in weights if w.dtype.kind == "i" and w.ndim >= 2]
    assert int_weights and all(w.min() >= -8 and w.max() <= 7 for w in int_weights)
    # 7-bit activations: every activation quantizer is clamped at 127, and the layers that lose
    # their fusion read dequantized weights, still on a 16-level grid per output channel.
    graph = onnx.load(run_dirs["w4a7"] / artifacts.ONNX).graph
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    clamps = {n.output[0] for n in graph.node if n.op_type == "Min"}
    assert quantizers and all(q.input[0] in clamps for q in quantizers)
    floats = [onnx.numpy_helper.to_array(i) for i in graph.initializer]
    kernels = [w for w in floats if w.dtype.kind == "f" and w.ndim >= 2 and w.shape[0] > 1]
    assert kernels and all(len(set(channel.ravel().tolist())) <= 16 for w in kernels for channel in w)
    config, meta = artifacts.load_config(run_dirs["w4a7"])
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
