"""`divqat serve` as a process: it runs from the ONNX file alone, and kill -9 loses no count."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from divqat.wire import encode_images

DIVQAT = [str(Path(sys.executable).with_name("divqat"))]
FORBIDDEN = ("torch", "torchao", "divqat.train", "divqat.quant", "divqat.models", "divqat.defenses", "divqat.data")


def onnx_only(victim_dir: Path, tmp_path: Path) -> Path:
    """A directory holding the deployed model and nothing else of the run."""
    run = tmp_path / "deployed"
    run.mkdir()
    shutil.copy(victim_dir / "model.onnx", run / "model.onnx")
    return run


def start(run: Path, db: Path, keys: Path) -> tuple[subprocess.Popen, str]:
    args = [*DIVQAT, "serve", str(run), "--port", "0", "--db", str(db), "--keys", str(keys), "--no-access-log"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # "serving RUN at http://127.0.0.1:PORT (...)", once the port is bound
        seen.append(line)
        if match := re.search(r"http://127\.0\.0\.1:\d+", line):
            return proc, match[0]
        if len(seen) > 20:
            proc.kill()
    raise AssertionError("the server did not start: " + "".join(seen))


def test_kill_9_after_a_200_loses_no_count(victim_dir, tmp_path):
    run, db, keys = onnx_only(victim_dir, tmp_path), tmp_path / "keys.db", tmp_path / "keys.yaml"
    keys.write_text("- {key: alice-key-0001-0123456789abcdef012, budget: 100}\n")
    images = np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)
    proc, url = start(run, db, keys)
    try:
        headers = {"Authorization": "Bearer alice-key-0001-0123456789abcdef012"}
        answer = httpx.post(f"{url}/v1/predict", content=encode_images(images), headers=headers, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["probabilities"]) == 7
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    proc, url = start(run, db, keys)
    try:
        usage = httpx.get(f"{url}/v1/usage", headers=headers, timeout=60).json()
    finally:
        proc.terminate()
        proc.wait(30)
    assert (usage["used"], usage["remaining"]) == (7, 93)


SERVE_WITHOUT_TRAINING_CODE = """
import json, sys
import numpy as np
from starlette.testclient import TestClient
from divqat.serve.app import create_app
from divqat.serve.keys import KeySpec
from divqat.wire import parse_output_mode
from divqat.wire import encode_images

KEY = KeySpec("alice-key-0001-0123456789abcdef012", 10, parse_output_mode("label"))
app = create_app(sys.argv[1], sys.argv[2], keys=[KEY])
with TestClient(app) as client:
    r = client.post("/v1/predict", content=encode_images(np.zeros((3, 1, 28, 28), np.float32)),
                    headers={"Authorization": "Bearer alice-key-0001-0123456789abcdef012"})
print(json.dumps({"status": r.status_code, "answer": r.json(), "modules": sorted(sys.modules)}))
"""


def test_the_serving_path_imports_no_training_code(victim_dir, tmp_path):
    run = onnx_only(victim_dir, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TRAINING_CODE, str(run), str(tmp_path / "k.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == 200 and len(out["answer"]["labels"]) == 3
    assert [m for m in out["modules"] if m.split(".")[0] == "torch" or m.startswith(FORBIDDEN)] == []
    assert "onnxruntime" in out["modules"]


def test_serve_errors_are_one_line(victim_dir, tmp_path, capsys, monkeypatch):
    import uvicorn

    from divqat.cli import main

    def never(*args, **kwargs):  # should a case below start serving, fail rather than serve forever
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn.Server, "run", never)
    elsewhere = onnx_only(victim_dir, tmp_path)  # a victim whose data set this machine does not have
    (elsewhere / "config.json").write_text(json.dumps({"victim": {"dataset": "imagenet-22k"}}))
    cases = [
        (["serve", str(tmp_path / "none")], "not a directory"),
        (["serve", str(tmp_path)], "has no model.onnx"),
        (["serve", str(victim_dir), "--keys", str(tmp_path / "none.yaml")], "no such keys file"),
        (["serve", str(victim_dir), "--defense", "magic"], "unknown defense 'magic'"),
        (["serve", str(victim_dir), "--defense-param", "k=1"], "--defense-param needs a --defense"),
        (["serve", str(elsewhere), "--defense", "mad"], "defense mad needs the victim's imagenet-22k data"),
        (["serve", str(victim_dir), "--prada-delta", "0.9"], "need --prada"),
        (["serve", str(victim_dir), "--prada", "--prada-delta", "2"], "delta must be in (0, 1]"),
        (["serve", str(victim_dir), "--port", "70000"], "cannot listen on 127.0.0.1:70000"),
        (["serve", str(victim_dir), "--max-batch", "0"], "--max-batch must be >= 1"),
    ]
    for args, match in cases:
        assert main([*args, "--db", str(tmp_path / "k.db")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("divqat: error:") and match in lines[0], lines
