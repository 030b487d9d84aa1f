"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has a Python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    victim, thief, defended = (float(v) for v in re.findall(r"\d\.\d+", line))
    assert victim > 0.8 and 0.0 <= thief <= 1.0 and 0.0 <= defended <= 1.0
    assert (tmp_path / "runs" / "api-demo" / "model.onnx").is_file()


def test_own_loop_example_runs(tmp_path, monkeypatch, capsys):
    """The README's hand-written QAT loop with DivQAT's loss and outlier forward."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[1], "README.md", "exec"), {"__name__": "readme"})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("last loss ") and line.endswith("int8 logits (2, 10)")
