"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def example(marker: str) -> str:
    """The README's Python block that contains `marker`."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if marker in b]
    assert len(blocks) == 1, f"one README example holds {marker!r}"
    return blocks[0]


def run(code: str, capsys) -> str:
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_python_api_examples_run(tmp_path, monkeypatch, capsys):
    """The objects example, then (with the [art] extra) ART on both sides of its victim."""
    monkeypatch.chdir(tmp_path)
    line = run(example("api.train_victim("), capsys)
    victim, thief, defended = (float(v) for v in re.findall(r"\d\.\d+", line))
    assert victim > 0.8 and 0.0 <= thief <= 1.0 and 0.0 <= defended <= 1.0
    assert (tmp_path / "runs" / "api-demo" / "model.onnx").is_file()
    pytest.importorskip("art", reason="the [art] extra (scripts/setup.sh installs it)")
    assert run(example("KnockoffNets("), capsys) == "divqat counted 1000 queries, 0 left"


def test_own_entries_example_registers(capsys):
    from divqat.attacks import ATTACKS
    from divqat.defenses import DEFENSES

    try:
        exec(compile(example("register_attack("), "README.md", "exec"), {"__name__": "readme"})
        assert ATTACKS["first-n"]().params() == {"n": 100} and DEFENSES["coarse"]().params() == {"step": 0.1}
    finally:
        ATTACKS.pop("first-n", None)
        DEFENSES.pop("coarse", None)


def test_own_loop_example_runs(tmp_path, monkeypatch, capsys):
    """The README's hand-written QAT loop with DivQAT's loss and outlier forward."""
    monkeypatch.chdir(tmp_path)
    line = run(example("outlier_forward(qat)"), capsys)
    assert line.startswith("last loss ") and line.endswith("int8 logits (2, 10)")
