"""`divqat serve --watermark`: every key is told the same marks, each key's record is kept in the
database (through kill -9), `divqat verify --db` reads it, and the secret appears nowhere else."""

import json
import os
import re
import signal
import subprocess

import httpx
import numpy as np
import pytest
import torch
from serving import client, running, spec
from starlette.testclient import TestClient
from test_serve_process import DIVQAT, onnx_only

from divqat import api
from divqat.cli import main
from divqat.defenses import create_defense
from divqat.serve import watermarks
from divqat.serve.app import create_app
from divqat.serve.keys import KeyStore
from divqat.verify import POOLED
from divqat.wire import encode_images

SECRET = bytes(range(100, 132))


def structured(n: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(n, 1, 7, 7, generator=g), size=28, mode="bilinear")
    return coarse.numpy().astype(np.float32)


def test_two_keys_are_told_the_same_marks_each_keeps_its_record_and_together_they_count_once(
    victim_dir, tmp_path, store_target, capsys
):
    (tmp_path / "wm.key").write_bytes(SECRET)
    mark = create_defense("watermark", {"rate": 0.2, "secret_file": str(tmp_path / "wm.key")})
    db, key_secret = store_target, tmp_path / "key.secret"
    keys = [spec("alice-key-0001-0123456789abcdef012", 1000), spec("bob-key-00001-0123456789abcdef012", 1000)]
    images = structured(200, 0)
    with running(create_app(victim_dir, db, (mark,), keys=keys, key_secret=key_secret)) as url:
        told = {}
        for key in ("alice-key-0001-0123456789abcdef012", "bob-key-00001-0123456789abcdef012"):
            with client(url, key) as c:
                told[key] = np.asarray(c.post("/v1/predict", content=encode_images(images)).json()["probabilities"])
    assert np.array_equal(told["alice-key-0001-0123456789abcdef012"], told["bob-key-00001-0123456789abcdef012"])
    store = KeyStore(db, create=False, secret_file=key_secret)
    records = {k.id: watermarks.load(store.connection(), k.rowid) for k in store.all()}
    for record in records.values():
        marked = told["alice-key-0001-0123456789abcdef012"].argmax(1)
        assert 10 < len(record) <= 200
        t = record.tensors()
        rows = [int(np.flatnonzero((images == im.numpy()).reshape(len(images), -1).all(1))[0]) for im in t["images"]]
        assert marked[rows].tolist() == t["mark"].tolist()
        assert torch.equal(t["natural"].argmax(1), t["top1"])  # the model's own answers, kept with the marks
    # The victim itself is innocent of its own marks; the command names every account.
    assert main(["verify", str(victim_dir), "--db", str(db), "--json"]) == 0
    # Together, the two keys are one record: the same codes told twice count once.
    assert main(["verify", str(victim_dir), "--db", str(db), "--together"]) == 2  # which keys? never all of them
    assert "--key" in capsys.readouterr().err
    named = [arg for k in records for arg in ("--key", k)]  # public ids: no key secret needed to find them
    assert main(["verify", str(victim_dir), "--db", str(db), "--json", "--together", *named]) == 0
    first, *rest = json.loads(capsys.readouterr().out)["accounts"]
    assert first["account"] == POOLED and first["asked"] == len(next(iter(records.values())))
    assert not first["stolen"] and sorted(a["account"] for a in rest) == sorted(records)
    # A key itself is found with the database's key secret, wherever it is kept; alone, nothing is pooled.
    alice = ["--key", "alice-key-0001-0123456789abcdef012", "--key-secret", str(key_secret), "--together"]
    assert main(["verify", str(victim_dir), "--db", str(db), "--json", *alice]) == 0
    out = capsys.readouterr()
    assert [a["account"] for a in json.loads(out.out)["accounts"]] == [store.find(alice[1]).id]
    assert "nothing was pooled" in out.err


def test_verify_names_the_account_a_memorising_clone_came_through(victim_dir, tmp_path, capsys):
    (tmp_path / "wm.key").write_bytes(SECRET)
    mark = create_defense("watermark", {"rate": 0.2, "secret_file": str(tmp_path / "wm.key")})
    db = tmp_path / "k.db"
    images = structured(300, 1)
    app = create_app(
        victim_dir,
        db,
        (mark,),
        keys=[spec("alice-key-0001-0123456789abcdef012", 1000), spec("bob-key-00001-0123456789abcdef012", 1000)],
    )
    with TestClient(app) as c:
        told = c.post(
            "/v1/predict",
            content=encode_images(images),
            headers={"Authorization": "Bearer alice-key-0001-0123456789abcdef012"},
        )
    told = torch.tensor(told.json()["probabilities"])
    x = torch.from_numpy(images)

    def clone(batch):
        hits = (batch[:, None] == x[None]).flatten(2).all(-1)
        out = torch.full((len(batch), told.shape[1]), 1 / told.shape[1])
        out[hits.any(1)] = told[hits[hits.any(1)].float().argmax(1)]
        return out

    store = KeyStore(db, create=False)
    alice, bob = store.find("alice-key-0001-0123456789abcdef012"), store.find("bob-key-00001-0123456789abcdef012")
    records = {k.id: watermarks.load(store.connection(), k.rowid) for k in (alice, bob)}
    result = api.verify(clone, records)
    verdicts = {a["account"]: a for a in result["accounts"]}
    assert list(verdicts) == [alice.id]  # bob was told nothing watermarked: no record to test
    assert verdicts[alice.id]["stolen"] and verdicts[alice.id]["p_value"] < 1e-9


def test_the_record_survives_kill_9_and_the_secret_appears_nowhere_else(victim_dir, tmp_path):
    run, db, keys, secret = (
        onnx_only(victim_dir, tmp_path),
        tmp_path / "keys.db",
        tmp_path / "keys.yaml",
        tmp_path / "wm.key",
    )
    secret.write_bytes(SECRET)
    keys.write_text("- {key: alice-key-0001-0123456789abcdef012, budget: 1000}\n")
    args = [*DIVQAT, "serve", str(run), "--port", "0", "--db", str(db), "--keys", str(keys), "--watermark", "0.2",
            "--secret-file", str(secret)]  # fmt: skip
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    log = []
    for line in proc.stderr:
        log.append(line)
        if match := re.search(r"http://127\.0\.0\.1:\d+", line):
            url = match[0]
            break
    images = structured(100, 2)
    try:
        r = httpx.post(f"{url}/v1/predict", content=encode_images(images),
                       headers={"Authorization": "Bearer alice-key-0001-0123456789abcdef012"}, timeout=60)  # fmt: skip
        assert r.status_code == 200
        told = np.asarray(r.json()["probabilities"])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        log += proc.stderr.read().splitlines()
        proc.wait(30)
    store = KeyStore(db, create=False)
    record = watermarks.load(store.connection(), store.find("alice-key-0001-0123456789abcdef012").rowid)
    assert len(record) > 5 and set(record.mark) <= set(told.argmax(1).tolist())
    hexed = SECRET.hex()
    texts = [r.text, "".join(log)] + [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*")
                                      if p.is_file() and p != secret]  # fmt: skip
    assert not [t for t in texts if SECRET.decode("latin-1") in t or hexed in t]
    assert json.loads(r.text).keys() == {"probabilities"}


@pytest.mark.parametrize("per", ["image", "class"])
def test_scramble_records_the_orders_each_probability_key_was_told(victim_dir, tmp_path, capsys, per):
    """Behind `--defense scramble` every answer is a mark: the database keeps, per key, the orders
    told in probability mode (a label key was told none) and how they were drawn, and `divqat
    verify --db` tests them."""
    (tmp_path / "s.key").write_bytes(SECRET)
    scramble = create_defense("scramble", {"secret_file": str(tmp_path / "s.key"), "per": per})
    db = tmp_path / "k.db"
    alice, bob = "alice-key-0001-0123456789abcdef012", "bob-key-00001-0123456789abcdef012"
    images = structured(300, 3)
    app = create_app(victim_dir, db, (scramble,), keys=[spec(alice, 1000), spec(bob, 1000, "label")])
    with TestClient(app) as c:
        answers = {k: c.post("/v1/predict", content=encode_images(images), headers={"Authorization": f"Bearer {k}"})
                   for k in (alice, bob)}  # fmt: skip
    told = torch.tensor(answers[alice].json()["probabilities"])
    store = KeyStore(db, create=False)
    records = {k.id: watermarks.load(store.connection(), k.rowid) for k in store.all()}
    ids = {k: store.find(k).id for k in (alice, bob)}
    assert len(records[ids[bob]].orders) == 0 and 20 < len(records[ids[alice]].orders) <= 300
    assert records[ids[alice]].orders.per == per
    t = records[ids[alice]].orders.tensors()
    rows = [int(np.flatnonzero((images == im.numpy()).reshape(len(images), -1).all(1))[0]) for im in t["images"]]
    assert torch.equal(t["served"], told[rows])
    x = torch.from_numpy(images)

    def clone(batch):  # memorised what alice was told
        hits = (batch[:, None] == x[None]).flatten(2).all(-1)
        return told[hits.float().argmax(1)]

    (verdict,) = api.verify(clone, records)["accounts"]
    assert verdict["account"] == ids[alice] and verdict["test"] == "order" and verdict["stolen"]
    assert main(["verify", str(victim_dir), "--db", str(db), "--json"]) == 0  # the victim: innocent of the orders
    (innocent,) = json.loads(capsys.readouterr().out)["accounts"]
    assert innocent["test"] == "order" and not innocent["stolen"]


def test_unsure_answers_get_their_own_rate_and_marks_their_probability_in_serve(victim_dir, tmp_path, capsys):
    from divqat.serve.worker import ServeSettings, build_defenses_of

    (tmp_path / "wm.key").write_bytes(SECRET)
    params = ("unsure_below=0.7", "unsure_rate=0.03", "mark_probability=0.9")
    settings = ServeSettings(run_dir=str(victim_dir), db=str(tmp_path / "k.db"), watermark=0.002,
                             secret_file=str(tmp_path / "wm.key"), watermark_params=params)  # fmt: skip
    mark = build_defenses_of(ServeSettings.from_json(settings.to_json()))[-1]  # as a worker gets it
    assert (mark.rate, mark.unsure_below, mark.unsure_rate, mark.mark_probability) == (0.002, 0.7, 0.03, 0.9)
    assert "secret" not in repr(mark).replace("secret_file", "") and SECRET.hex() not in repr(mark)
    args = ["serve", str(victim_dir), "--port", "0", "--db", str(tmp_path / "k.db")]
    on = ["--watermark", "0.002", "--secret-file", str(tmp_path / "wm.key")]
    capsys.readouterr()
    for words, message in [
        (["--watermark-param", "unsure_below=0.7"], "--watermark-param needs --watermark"),
        (["--watermark-param", "mark_probability=0.9"], "--watermark-param needs --watermark"),
        ([*on, "--watermark-param", "unsure_rate=0.9"], "unsure_rate must be in [0.0, 0.5]"),
        ([*on, "--watermark-param", "mark_probability=2"], "mark_probability must be in [0.0, 1.0]"),
        ([*on, "--watermark-param", "unsure=0.5"], "has no parameter 'unsure'"),
        ([*on, "--watermark-param", "rate=0.1"], "--watermark-param rate: give it as --watermark"),
    ]:
        assert main([*args, *words]) == 2, words
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (words, err)
