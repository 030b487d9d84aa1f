"""The command line: every bad input is one line on stderr, a non-zero exit, and nothing lost."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from divqat.cli import main
from divqat.errors import DivqatError
from divqat.models import MODELS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

QUICK = ["--epochs", "1", "--fp-epochs", "1", "--batch-size", "128", "--quiet"]


@pytest.fixture(scope="module")
def fp_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "fp"
    assert main(["train", "--method", "fp", "--data-root", str(tiny_root), "--out", str(out), *QUICK]) == 0
    return out


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, match: str):
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("divqat: error:") and match in lines[0], err
    assert "Traceback" not in err


def test_train_writes_metrics_and_onnx(tiny_root, fp_run, tmp_path):
    out = tmp_path / "div"
    args = ["train", "--method", "divqat", "--alpha", "0.5", "--from", str(fp_run), "--data-root", str(tiny_root)]
    assert main([*args, "--out", str(out), *QUICK]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "divqat" and m["alpha"] == 0.5 and 0 <= m["int8_accuracy"] <= 1
    assert (out / "model.onnx").is_file() and not list(tmp_path.glob(".*partial"))


def test_evaluate_a_run(tiny_root, fp_run, tmp_path, capsys):
    out = tmp_path / "qat"
    assert (
        main(
            [
                "train",
                "--method",
                "qat",
                "--from",
                str(fp_run),
                "--data-root",
                str(tiny_root),
                "--out",
                str(out),
                *QUICK,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data-root", str(tiny_root)]) == 0
    assert "onnx_vs_in_process_agreement" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,match",
    [
        (["--model", "vgg99"], "unknown model"),
        (["--method", "magic"], "unknown method"),
        (["--alpha", "-1"], "alpha: must be"),
        (["--bits", "3"], "weight_bits: must be 8 or 4"),
        (["--activation-bits", "6"], "activation_bits: must be"),
        (["--divergence", "emd"], "unknown divergence"),
        (["--dataset", "imagenet"], "unknown dataset"),
        (["--bits", "eight"], "--bits"),
        (["--data-root", "/nonexistent/divqat"], "not a directory"),
        (["--epochs", "0"], "epochs: must be >= 1"),
    ],
)
def test_bad_train_inputs(capsys, tmp_path, args, match):
    code, err = run_cli(capsys, "train", "--out", str(tmp_path / "x"), *QUICK, *args)  # the case wins
    assert_one_line_error(code, err, match)
    assert not (tmp_path / "x").exists()


def test_missing_data_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("divqat.data.locate.SYSTEM_ROOT", tmp_path / "none")
    monkeypatch.delenv("DIVQAT_DATA", raising=False)
    code, err = run_cli(
        capsys, "train", "--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "x"), *QUICK
    )
    assert_one_line_error(code, err, "mnist not found")


def test_existing_output_is_not_overwritten(capsys, tmp_path, tiny_root):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, err = run_cli(capsys, "train", "--data-root", str(tiny_root), "--out", str(out), *QUICK)
    assert_one_line_error(code, err, "not empty")
    assert (out / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("damage", ["truncate-fp", "truncate-quant", "garbage-onnx", "no-config"])
def test_corrupt_model_files(capsys, tmp_path, fp_run, tiny_root, damage):
    source = tmp_path / "run"
    shutil.copytree(fp_run, source)
    if damage == "truncate-fp":
        (source / "fp.safetensors").write_bytes((source / "fp.safetensors").read_bytes()[:50])
        code, err = run_cli(
            capsys, "train", "--from", str(source), "--data-root", str(tiny_root), "--out", str(tmp_path / "x"), *QUICK
        )
        assert_one_line_error(code, err, "corrupt or truncated")
        return
    if damage == "truncate-quant":
        (source / "quant.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
        (source / "config.json").write_text((source / "config.json").read_text().replace('"fp"', '"qat"'))
    elif damage == "garbage-onnx":
        (source / "model.onnx").write_bytes(b"not a protobuf")
    else:
        (source / "config.json").unlink()
    code, err = run_cli(capsys, "evaluate", str(source), "--data-root", str(tiny_root))
    assert_one_line_error(
        code,
        err,
        {"truncate-quant": "quant.safetensors", "garbage-onnx": "not a valid ONNX", "no-config": "not a divqat run"}[
            damage
        ],
    )


def test_real_process_exit_code_and_no_traceback(tmp_path):
    env = {**os.environ, "DIVQAT_DATA": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "divqat.cli", "train", "--alpha", "-2", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "alpha: must be" in proc.stderr


def test_unknown_option_is_one_line(capsys):
    code, err = run_cli(capsys, "train", "--no-such-flag")
    assert_one_line_error(code, err, "no-such-flag")


def test_attack_writes_result(capsys, tmp_path, fp_run, tiny_root):
    out = tmp_path / "stolen"
    args = ["attack", "--victim", str(fp_run), "--out", str(out), "--pool", "in", "--budget", "300", "--epochs", "2"]
    assert (
        main(
            [
                *args,
                "--data-root",
                str(tiny_root),
                "--backend",
                "fp",
                "--defense",
                "top-k",
                "--defense-param",
                "k=2",
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads((out / "result.json").read_text())
    for key in ("surrogate_accuracy", "fidelity", "victim_accuracy", "extraction_ratio", "queries"):
        assert result[key] is not None
    assert result["queries"] == 300 and result["defenses"] == [{"name": "top-k", "k": 2}]
    assert (out / "surrogate.safetensors").is_file()


@pytest.mark.parametrize(
    "args,match",
    [
        (["--budget", "0"], "budget: must be a positive"),
        (["--budget", "-5"], "budget: must be a positive"),
        (["--attack", "copycat"], "unknown attack"),
        (["--labels", "fuzzy"], "labels: must be one of"),
        (["--backend", "tpu"], "unknown backend"),
        (["--defense", "blur"], "unknown defense"),
        (["--defense", "top-k", "--defense-param", "k=0"], "k must be in"),
        (["--defense", "top-k", "--defense-param", "depth=2"], "no parameter 'depth'"),
        (["--defense-param", "k=2"], "needs a --defense"),
        (["--defense-sweep", "k=1,2"], "needs a --defense"),
        (["--defense", "top-k", "--defense-sweep", "k"], "takes key=v1,v2"),
        (["--defense", "top-k", "--defense-sweep", "k=2,0"], "k must be in"),
    ],
)
def test_bad_attack_inputs(capsys, tmp_path, fp_run, args, match):
    code, err = run_cli(capsys, "attack", "--victim", str(fp_run), "--out", str(tmp_path / "o"), *args)
    assert_one_line_error(code, err, match)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage", ["missing", "empty", "corrupt-onnx"])
def test_bad_victim_directory(capsys, tmp_path, fp_run, tiny_root, damage):
    victim = tmp_path / "victim"
    if damage == "empty":
        victim.mkdir()
    elif damage == "corrupt-onnx":
        shutil.copytree(fp_run, victim)
        (victim / "model.onnx").write_bytes((victim / "model.onnx").read_bytes()[:200])
    code, err = run_cli(
        capsys, "attack", "--victim", str(victim), "--out", str(tmp_path / "o"), "--data-root", str(tiny_root)
    )
    match = {"missing": "is not a directory", "empty": "not a divqat run directory", "corrupt-onnx": "not a valid ONNX"}
    assert_one_line_error(code, err, match[damage])


def test_defense_sweep_writes_one_result_per_value(capsys, tmp_path, fp_run, tiny_root):
    out = tmp_path / "sweep"
    args = ["attack", "--victim", str(fp_run), "--out", str(out), "--pool", "in", "--budget", "200", "--epochs", "1"]
    args += ["--backend", "fp", "--defense", "rounding", "--defense-sweep", "decimals=1,3", "--quiet"]
    assert main([*args, "--data-root", str(tiny_root)]) == 0
    results = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/result.json")}
    assert sorted(results) == ["decimals-1", "decimals-3"]
    assert results["decimals-1"]["defenses"][0]["decimals"] == 1
    assert results["decimals-1"]["defense_l1"] >= results["decimals-3"]["defense_l1"]


@pytest.mark.parametrize("name", ["mad", "adaptive-misinformation", "random-noise"])
def test_attack_through_a_defense_with_a_model(capsys, tmp_path, fp_run, tiny_root, name):
    out = tmp_path / name
    args = ["attack", "--victim", str(fp_run), "--out", str(out), "--pool", "in", "--budget", "200", "--epochs", "1"]
    assert main([*args, "--backend", "fp", "--defense", name, "--data-root", str(tiny_root), "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["defenses"][0]["name"] == name and result["defense_l1"] > 0


@pytest.mark.parametrize("target", [".", "/", "..", "~"])
@pytest.mark.parametrize("command", ["train", "attack", "run"])
def test_out_that_is_no_new_directory_fails_before_any_work(capsys, tmp_path, monkeypatch, fp_run, target, command):
    """--out . (or /, .., ~) fails at once: a run is staged beside --out and renamed into place."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("precious")
    monkeypatch.chdir(work)
    out = str(Path(target).expanduser()) if target == "~" else target
    args = {
        "train": ["train", "--out", out, "--overwrite", *QUICK],
        "attack": ["attack", "--victim", str(fp_run), "--out", out, "--overwrite"],
        "run": ["run", str(CONFIGS / "fashion-mnist-small.yaml"), "--out", out],
    }[command]
    code, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "current, a parent or the home directory")
    assert (work / "keep.txt").read_text() == "precious"


def test_overwrite_replaces_only_a_divqat_run(capsys, tmp_path, fp_run, tiny_root):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code, err = run_cli(capsys, "train", "--data-root", str(tiny_root), "--out", str(mine), "--overwrite", *QUICK)
    assert_one_line_error(code, err, "not a divqat run")
    assert (mine / "thesis.tex").read_text() == "years of work"
    run = tmp_path / "run"
    shutil.copytree(fp_run, run)
    args = ["train", "--method", "qat", "--from", str(fp_run), "--data-root", str(tiny_root), "--out", str(run)]
    assert main([*args, "--overwrite", *QUICK]) == 0
    assert json.loads((run / "metrics.json").read_text())["method"] == "qat"
    assert not list(tmp_path.glob(".*"))  # no staging or old copy left behind


def test_run_refuses_a_directory_that_is_not_its_own(capsys, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code, err = run_cli(capsys, "run", str(CONFIGS / "fashion-mnist-small.yaml"), "--out", str(taken))
    assert_one_line_error(code, err, "not a divqat results directory")
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]


def test_a_failed_attack_leaves_no_staging_directory(capsys, tmp_path, fp_run, tiny_root, monkeypatch):
    def broken(*args, **kwargs):
        raise DivqatError("disk full")

    monkeypatch.setattr("divqat.artifacts.save_state", broken)
    out = tmp_path / "stolen"
    args = ["attack", "--victim", str(fp_run), "--out", str(out), "--pool", "in", "--budget", "100", "--epochs", "1"]
    code, err = run_cli(capsys, *args, "--backend", "fp", "--data-root", str(tiny_root), "--quiet")
    assert_one_line_error(code, err, "disk full")
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_plugin_registrations_reach_the_cli(capsys, tmp_path, tiny_root):
    plugin = tmp_path / "my_models.py"
    plugin.write_text(
        "from torch import nn\n"
        "from divqat.models import register_model\n\n"
        "@register_model\n"
        "def tiny_mlp(normalize, num_classes, input_shape):\n"
        "    c, h, w = input_shape\n"
        "    layers = [nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes)]\n"
        "    return nn.Sequential(normalize, *layers)\n"
    )
    out = tmp_path / "mlp"
    args = ["--plugin", str(plugin), "train", "--model", "tiny_mlp", "--method", "qat", "--data-root", str(tiny_root)]
    try:
        assert main([*args, "--out", str(out), *QUICK]) == 0
    finally:  # the registry is the process's: the tests after this one (on its worker) see divqat's own models
        MODELS.pop("tiny_mlp", None)
    assert json.loads((out / "config.json").read_text())["victim"]["model"] == "tiny_mlp"
    capsys.readouterr()
    code, err = run_cli(capsys, "--plugin", str(tmp_path / "missing.py"), "list")
    assert_one_line_error(code, err, "no such file")
    code, err = run_cli(capsys, "--plugin", "no_such_module_xyz", "list")
    assert_one_line_error(code, err, "failed to import")


def test_divqat_secret_writes_a_private_file_and_never_overwrites_one(fp_run, tiny_root, tmp_path, capsys):
    path = tmp_path / "keys" / "wm.key"
    assert main(["secret", str(path)]) == 0
    capsys.readouterr()
    first = path.read_bytes()
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["secret", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "never overwritten" in err and err.count("\n") == 0 and path.read_bytes() == first
    chosen = tmp_path / "chosen.key"
    assert main(["secret", str(chosen), "--victim", str(fp_run), "--rate", "0.05", "--data-root", str(tiny_root)]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert len(chosen.read_bytes()) == 32 and "changes the top-1 of" in said and "training images" in said


def test_no_option_help_loses_text_in_brackets_to_rich_markup():
    """rich reads `[word]` in a help text as markup and drops it (`pip install -e '.[ray]'` printed
    as `'.'`): brackets are escaped or written as parentheses."""
    import re

    import typer

    from divqat.cli import app

    def commands(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from commands(sub)

    helps = [p.help for c in commands(typer.main.get_command(app)) for p in c.params if getattr(p, "help", None)]
    assert len(helps) > 50
    assert [h for h in helps if re.search(r"(?<!\\)\[[a-z#/@][^\[]*?\]", h)] == []  # rich's tag pattern
