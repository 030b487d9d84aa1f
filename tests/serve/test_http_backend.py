"""The http backend: a served victim behind `BlackBoxVictim`, and `divqat attack --backend http`."""

import json

import pytest
import torch
from safetensors.torch import load_file
from serving import loopback_socket, running, spec

from divqat.blackbox import BlackBoxVictim, BudgetExceeded, load_backend
from divqat.cli import main
from divqat.defenses import create_defense
from divqat.errors import DivqatError
from divqat.serve.app import create_app
from divqat.serve.payload import Limits

KEYS = [
    spec("alice-key-0001-0123456789abcdef012", 10_000),
    spec("topk-key-0001-0123456789abcdef012", 10_000, "top-k:2"),
    spec("label-key-001-0123456789abcdef012", 10_000, "label"),
    spec("small-key-001-0123456789abcdef012", 20),
    spec("thief-key-001-0123456789abcdef012", 300),
    spec("sweep-key-001-0123456789abcdef012", 200),
]


@pytest.fixture(scope="module")
def server(victim_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "keys.db"
    with running(create_app(victim_dir, db, keys=KEYS, limits=Limits(max_batch=16))) as url:
        yield url


@pytest.fixture(scope="module")
def onnx(victim_dir):
    return load_backend(victim_dir, "onnx")


def test_answers_equal_the_onnx_backend_across_the_batch_limit(server, onnx, victim_dir, tiny_splits):
    remote = load_backend(victim_dir, "http", url=server, key="alice-key-0001-0123456789abcdef012")
    x = tiny_splits.test.images[:50]  # four requests of at most 16
    assert torch.equal(remote(x), onnx(x))
    assert remote.usage()["used"] == 50 and remote.remaining == 9_950 and str(remote.output) == "probabilities"


@pytest.mark.parametrize(
    "key,defense",
    [
        ("topk-key-0001-0123456789abcdef012", ("top-k", {"k": 2})),
        ("label-key-001-0123456789abcdef012", ("label-only", {})),
    ],
)
def test_output_modes_arrive_as_the_matching_defense(server, onnx, victim_dir, tiny_splits, key, defense):
    x = tiny_splits.test.images[:40]
    remote = BlackBoxVictim(load_backend(victim_dir, "http", url=server, key=key), 40)
    local = BlackBoxVictim(onnx, 40, [create_defense(*defense)])
    torch.testing.assert_close(remote.query(x), local.query(x), rtol=1e-6, atol=1e-7)


def test_the_servers_budget_refuses_whole_batches(server, victim_dir, tiny_splits):
    remote = load_backend(victim_dir, "http", url=server, key="small-key-001-0123456789abcdef012")
    remote(tiny_splits.test.images[:12])
    with pytest.raises(BudgetExceeded, match="12 more queries asked, 8"):
        remote(tiny_splits.test.images[:12])
    with pytest.raises(BudgetExceeded, match="17 more queries asked, 8 left"):  # over the batch limit: checked first
        remote(tiny_splits.test.images[:17])
    assert remote.usage()["used"] == 12


def test_unknown_key_and_unreachable_server(server, victim_dir):
    with pytest.raises(DivqatError, match="401 unknown API key"):
        load_backend(victim_dir, "http", url=server, key="nobody-key-01-0123456789abcdef012")
    sock = loopback_socket()  # a port that is bound but never answers HTTP: refused once closed
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(DivqatError, match="cannot reach the server"):
        load_backend(victim_dir, "http", url=f"http://127.0.0.1:{port}", key="alice-key-0001-0123456789abcdef012")
    with pytest.raises(DivqatError, match="needs --url and --key"):
        load_backend(victim_dir, "http", url=server)


def test_attack_over_http_steals_the_same_surrogate_as_onnx(server, victim_dir, tiny_root, tmp_path):
    common = ["attack", "--victim", str(victim_dir), "--attack", "knockoff", "--pool", "in", "--epochs", "2"]
    common += ["--seed", "0", "--data-root", str(tiny_root), "--quiet"]
    assert main([*common, "--backend", "onnx", "--budget", "300", "--out", str(tmp_path / "onnx")]) == 0
    # No --budget: the key's 300 remaining queries are the budget.
    http = [
        "--backend",
        "http",
        "--url",
        server,
        "--key",
        "thief-key-001-0123456789abcdef012",
        "--out",
        str(tmp_path / "http"),
    ]
    assert main([*common, *http]) == 0
    local, remote = (load_file(str(tmp_path / d / "surrogate.safetensors")) for d in ("onnx", "http"))
    assert local.keys() == remote.keys() and all(torch.equal(local[k], remote[k]) for k in local)
    results = [json.loads((tmp_path / d / "result.json").read_text()) for d in ("onnx", "http")]
    assert results[1]["backend"] == "http" and results[1]["queries"] == 300
    for field in ("surrogate_accuracy", "fidelity", "victim_accuracy", "queries", "budget"):
        assert results[0][field] == results[1][field]
    again = ["--backend", "http", "--url", server, "--key", "thief-key-001-0123456789abcdef012", "--budget", "10"]
    assert main([*common, *again, "--out", str(tmp_path / "again")]) == 2  # the key is spent: one-line error


@pytest.mark.parametrize(
    "args,match",
    [
        (["--backend", "http"], "needs --url and --key"),
        (["--backend", "onnx", "--url", "http://127.0.0.1:9"], "--url is for --backend http"),
        (
            ["--backend", "http", "--url", "ftp://x", "--key", "alice-key-0001-0123456789abcdef012"],
            "must start with http",
        ),
    ],
)
def test_attack_http_option_errors(victim_dir, tmp_path, capsys, args, match):
    assert main(["attack", "--victim", str(victim_dir), "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("divqat: error:") and match in err and "\n" not in err


def test_attack_budget_over_what_the_key_has_left(server, victim_dir, tiny_root, tmp_path, capsys):
    args = ["attack", "--victim", str(victim_dir), "--out", str(tmp_path / "x"), "--data-root", str(tiny_root)]
    args += ["--backend", "http", "--url", server, "--key", "alice-key-0001-0123456789abcdef012", "--budget", "1000000"]
    assert main(args) == 2
    assert "more than the" in capsys.readouterr().err


def test_attack_over_http_with_a_defense_sweep(server, victim_dir, tiny_root, tmp_path):
    args = ["attack", "--victim", str(victim_dir), "--pool", "in", "--epochs", "1", "--data-root", str(tiny_root)]
    args += [
        "--backend",
        "http",
        "--url",
        server,
        "--key",
        "sweep-key-001-0123456789abcdef012",
        "--budget",
        "100",
        "--quiet",
    ]
    args += ["--defense", "rounding", "--defense-sweep", "decimals=1,2", "--out", str(tmp_path / "sweep")]
    assert main(args) == 0
    for value in (1, 2):
        result = json.loads((tmp_path / "sweep" / f"decimals-{value}" / "result.json").read_text())
        assert result["queries"] == 100 and result["defenses"][0]["decimals"] == value
