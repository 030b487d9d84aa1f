"""The HTTP API against a real uvicorn server on a free loopback port."""

import json
import threading

import numpy as np
import pytest
import torch
from serving import client, running, spec

from divqat.blackbox import BlackBoxVictim
from divqat.defenses import create_defense
from divqat.quant import OnnxModel
from divqat.serve.app import create_app
from divqat.serve.keys import KeyStore
from divqat.serve.payload import Limits
from divqat.serve.prada import PradaConfig
from divqat.wire import encode_images, encode_raw

LIMITS = Limits(max_batch=64, max_body_bytes=2 * 2**20)
KEYS = [
    spec("alice-key-0001-0123456789abcdef012", 100_000),
    spec("topk-key-0001-0123456789abcdef012", 1000, "top-k:3"),
    spec("label-key-001-0123456789abcdef012", 1000, "label"),
    spec("small-key-001-0123456789abcdef012", 10),
    spec("shared-key-01-0123456789abcdef012", 50),
    spec("revoked-key-01-0123456789abcdef012", 1000),
]


@pytest.fixture(scope="module")
def server(victim_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "keys.db"
    app = create_app(victim_dir, db, keys=KEYS, limits=LIMITS)
    KeyStore(db).revoke("revoked-key-01-0123456789abcdef012")
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def reference(victim_dir):
    return OnnxModel(victim_dir / "model.onnx")


@pytest.fixture(scope="module")
def images(tiny_splits):
    return tiny_splits.test.images[:50]


def used(url, key) -> int:
    with client(url, key) as c:
        return c.get("/v1/usage").json()["used"]


def test_predictions_equal_the_onnx_model_in_every_form(server, reference, images):
    expected = reference.predict_proba(images).numpy()
    before = used(server, "alice-key-0001-0123456789abcdef012")
    with client(server, "alice-key-0001-0123456789abcdef012") as c:
        nested = c.post("/v1/predict", json={"images": images.tolist()})
        binary = c.post("/v1/predict", content=encode_images(images.numpy()))
        body, headers = encode_raw(images.numpy())
        raw = c.post("/v1/predict", content=body, headers=headers)
    assert nested.status_code == binary.status_code == raw.status_code == 200
    for answer in (nested, binary, raw):
        np.testing.assert_array_equal(np.asarray(answer.json()["probabilities"], np.float32), expected)
    assert used(server, "alice-key-0001-0123456789abcdef012") == before + 150
    assert int(raw.headers["X-Queries-Remaining"]) == 100_000 - before - 150


@pytest.mark.parametrize(
    "shape,cut,message",
    [(None, 0, "needs the header"), ("2,1,28", 0, "needs the header"), ("3,1,28,28", 0, "needs 9408 bytes"),
     ("2,1,28,28", 4, "needs 6272 bytes"), ("2,1,14,56", 0, "shape (N, 1, 28, 28)"), ("65,1,28,28", 0, "limit of 64")],
)  # fmt: skip
def test_bad_raw_bodies_are_one_line_422s(server, shape, cut, message):
    body, headers = encode_raw(np.zeros((2, 1, 28, 28), np.float32))
    headers = {k: v for k, v in headers.items() if k != "X-Images-Shape"} | ({"X-Images-Shape": shape} if shape else {})
    with client(server, "alice-key-0001-0123456789abcdef012") as c:
        r = c.post("/v1/predict", content=body[: len(body) - cut], headers=headers)
        assert r.status_code == 422 and message in r.json()["error"], r.text
        r = c.post("/v1/predict", json={"images": [[[[0.0]]]]}, headers={"X-Images-Shape": "1,1,1,1"})
        assert r.status_code == 422 and "goes with" in r.json()["error"]


def test_each_output_mode(server, reference, images):
    probs = reference.predict_proba(images).numpy()
    with client(server, "topk-key-0001-0123456789abcdef012") as c:
        top = c.post("/v1/predict", content=encode_images(images.numpy())).json()["top_k"]
    order = np.argsort(-probs, 1, kind="stable")[:, :3]
    assert top["labels"] == order.tolist()
    np.testing.assert_array_equal(np.asarray(top["probabilities"], np.float32), np.take_along_axis(probs, order, 1))
    with client(server, "label-key-001-0123456789abcdef012") as c:
        answer = c.post("/v1/predict", content=encode_images(images.numpy())).json()
    assert answer == {"labels": probs.argmax(1).tolist()}
    with client(server, "label-key-001-0123456789abcdef012") as c:
        usage = c.get("/v1/usage").json()
    assert usage["output"] == "label" and usage["used"] == 50 and usage["remaining"] == 950 and usage["budget"] == 1000


def test_a_batch_past_the_budget_is_refused_whole(server, images):
    with client(server, "small-key-001-0123456789abcdef012") as c:
        assert c.post("/v1/predict", content=encode_images(images[:6].numpy())).status_code == 200
        refused = c.post("/v1/predict", content=encode_images(images[:6].numpy()))
        assert refused.status_code == 429
        assert refused.json() == {"error": "query budget exhausted: 6 more queries asked, 4 of 10 left", "remaining": 4}
        usage = c.get("/v1/usage").json()
        assert len(usage.pop("key")) == 12  # the key's id, never the key
        assert usage == {
            "budget": 10,
            "used": 6,
            "remaining": 4,
            "output": "probabilities",
        }  # not PRADA's flag: it would tell a thief when to change keys
        assert c.post("/v1/predict", content=encode_images(images[:4].numpy())).status_code == 200
        assert c.post("/v1/predict", content=encode_images(images[:1].numpy())).json()["remaining"] == 0


def test_concurrent_requests_never_pass_the_budget(server, images):
    """24 threads ask for 216 queries in batches of 3 from a key with 50: exactly 16 batches are answered."""
    answered, statuses = [], []
    body = encode_images(images[:3].numpy())

    def worker():
        with client(server, "shared-key-01-0123456789abcdef012") as c:
            for _ in range(3):
                r = c.post("/v1/predict", content=body)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    answered.append(len(r.json()["probabilities"]))

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) == {200, 429}
    assert sum(answered) == used(server, "shared-key-01-0123456789abcdef012") == 48


def bad_requests(images):
    good = images[:2].numpy()
    b64 = json.loads(encode_images(good))["images_b64"]
    over = np.zeros((65, 1, 28, 28), np.float32)
    return {
        "malformed JSON": (b'{"images": [', 400, "malformed JSON"),
        "malformed base64": (json.dumps({"images_b64": "%%%", "shape": [2, 1, 28, 28]}).encode(), 400, "base64"),
        "wrong shape": (json.dumps({"images": images[:2, :, :20].tolist()}).encode(), 422, "(N, 1, 28, 28)"),
        "wrong byte count": (json.dumps({"images_b64": b64, "shape": [3, 1, 28, 28]}).encode(), 422, "bytes"),
        "wrong dtype": (
            json.dumps({"images_b64": b64, "shape": [2, 1, 28, 28], "dtype": "uint8"}).encode(),
            422,
            "dtype",
        ),
        "strings": (json.dumps({"images": [[["x"] * 28] * 28]}).encode(), 422, "numbers only"),
        "NaN": (json.dumps({"images": np.where(good > 0.5, np.nan, good).tolist()}).encode(), 422, "NaN"),
        "inf": (encode_images(np.where(good > 0.5, np.inf, good)), 422, "infinite"),
        "outside [0, 1]": (encode_images(good * 2 - 0.5), 422, "[0, 1]"),
        "empty batch": (b'{"images": []}', 422, "empty batch"),
        "batch over the limit": (encode_images(over), 422, "limit of 64"),
        "body over the limit": (json.dumps({"images": over.tolist()}).encode() + b" " * 2**21, 413, "bytes"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "malformed JSON",
        "malformed base64",
        "wrong shape",
        "wrong byte count",
        "wrong dtype",
        "strings",
        "NaN",
        "inf",
        "outside [0, 1]",
        "empty batch",
        "batch over the limit",
        "body over the limit",
    ],
)
def test_bad_input_is_a_one_line_4xx_and_spends_nothing(server, images, case):
    body, status, message = bad_requests(images)[case]
    before = used(server, "alice-key-0001-0123456789abcdef012")
    with client(server, "alice-key-0001-0123456789abcdef012") as c:
        r = c.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and list(r.json()) == ["error"], r.text
    assert message in r.json()["error"] and "\n" not in r.json()["error"] and "Traceback" not in r.text
    assert used(server, "alice-key-0001-0123456789abcdef012") == before


@pytest.mark.parametrize(
    "key,status,message",
    [
        (None, 401, "missing API key"),
        ("nobody-key-01-0123456789abcdef012", 401, "unknown API key"),
        ("bad key with spaces", 401, "unknown API key"),
        ("revoked-key-01-0123456789abcdef012", 403, "revoked"),
    ],
)
def test_missing_unknown_and_revoked_keys(server, images, key, status, message):
    body = encode_images(images[:2].numpy())
    with client(server, key) as c:
        for r in (c.post("/v1/predict", content=body), c.get("/v1/usage"), c.get("/v1/model")):
            assert r.status_code == status and message in r.json()["error"] and list(r.json()) == ["error"]


def test_revoked_key_spends_nothing(server, victim_dir, tmp_path, images):
    db = tmp_path / "k.db"
    app = create_app(victim_dir, db, keys=[spec("alice-key-0001-0123456789abcdef012", 100)])
    with running(app) as url, client(url, "alice-key-0001-0123456789abcdef012") as c:
        assert c.post("/v1/predict", content=encode_images(images[:5].numpy())).status_code == 200
        KeyStore(db).revoke("alice-key-0001-0123456789abcdef012")
        assert c.post("/v1/predict", content=encode_images(images[:5].numpy())).status_code == 403
    assert KeyStore(db).lookup("alice-key-0001-0123456789abcdef012").used == 5


def test_healthz_docs_and_openapi(server):
    with client(server, None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/docs").status_code == 200
        spec_ = c.get("/openapi.json").json()
        unknown = c.get("/v2/predict")
    assert {"/healthz", "/v1/model", "/v1/usage", "/v1/predict"} <= set(spec_["paths"])
    assert "requestBody" in spec_["paths"]["/v1/predict"]["post"]
    assert unknown.status_code == 404 and list(unknown.json()) == ["error"]
    with client(server, "alice-key-0001-0123456789abcdef012") as c:
        assert c.get("/v1/model").json()["input_shape"] == [1, 28, 28]


def test_a_restart_keeps_the_counts(victim_dir, tmp_path, images):
    db = tmp_path / "k.db"
    app = create_app(victim_dir, db, keys=[spec("alice-key-0001-0123456789abcdef012", 100)])
    with running(app) as url, client(url, "alice-key-0001-0123456789abcdef012") as c:
        assert c.post("/v1/predict", content=encode_images(images[:7].numpy())).status_code == 200
    with running(create_app(victim_dir, db, keys=[spec("alice-key-0001-0123456789abcdef012", 100)])) as url:
        assert used(url, "alice-key-0001-0123456789abcdef012") == 7


def test_defenses_chained_in_front_of_the_model(victim_dir, tmp_path, reference, images):
    def chain():
        return (create_defense("reverse-sigmoid", {"beta": "0.3"}), create_defense("rounding", {"decimals": "3"}))

    app = create_app(victim_dir, tmp_path / "k.db", chain(), keys=[spec("alice-key-0001-0123456789abcdef012", 100)])
    with running(app) as url, client(url, "alice-key-0001-0123456789abcdef012") as c:
        served = np.asarray(c.post("/v1/predict", content=encode_images(images.numpy())).json()["probabilities"])
    in_process = BlackBoxVictim(reference.predict_proba, 100, chain()).query(images)
    np.testing.assert_allclose(served, in_process.numpy(), atol=1e-7)


def jbda_like(images: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """Synthetic queries: seeds, then each known point moved by a signed step of random size."""
    rng = np.random.default_rng(seed)
    points = images[:10].numpy()
    while len(points) < n:
        steps = rng.exponential(0.02, (len(points), 1, 1, 1)) * np.sign(rng.standard_normal(points.shape))
        points = np.concatenate([points, np.clip(points + steps, 0, 1).astype(np.float32)])
    return points[:n]


def test_prada_flags_and_blocks_a_synthetic_stream_not_an_iid_one(victim_dir, tmp_path, tiny_splits):
    """Plumbing: per-key state, flag, block, restart. (The tiny data set is no benign stream: its
    images are 10 templates plus noise, which a 1-epoch victim mixes across classes, so d_min is
    bimodal and PRADA flags it; docs/serving.md measures benign streams on Fashion-MNIST.)"""
    db = tmp_path / "k.db"
    keys = [spec("thief-key-001-0123456789abcdef012", 10_000), spec("user-key-0001-0123456789abcdef012", 10_000)]
    natural = np.random.default_rng(0).random((300, 1, 28, 28), dtype=np.float32)  # iid: d_min ~ normal
    synthetic = jbda_like(tiny_splits.test.images, 300, seed=0)
    prada = PradaConfig(delta=0.95)
    app = create_app(victim_dir, db, keys=keys, prada=prada, block_flagged=True)
    with (
        running(app) as url,
        client(url, "thief-key-001-0123456789abcdef012") as thief,
        client(url, "user-key-0001-0123456789abcdef012") as user,
    ):
        for i in range(0, 300, 50):
            assert user.post("/v1/predict", content=encode_images(natural[i : i + 50])).status_code == 200
            r = thief.post("/v1/predict", content=encode_images(synthetic[i : i + 50]))
            if r.status_code == 403:
                break
        assert r.status_code == 403 and "flagged" in r.json()["error"]
        assert "flagged" not in thief.get("/v1/usage").json()
    thief_key = KeyStore(db).lookup("thief-key-001-0123456789abcdef012")
    assert thief_key.flagged is not None and thief_key.used == i  # the blocked batch spent nothing
    app = create_app(victim_dir, db, keys=keys, prada=prada, block_flagged=True)
    with running(app) as url, client(url, "thief-key-001-0123456789abcdef012") as thief:
        assert thief.post("/v1/predict", content=encode_images(natural[:5])).status_code == 403


def test_an_internal_error_is_a_one_line_500_and_spends_nothing(victim_dir, tmp_path, images):
    class Broken:
        name = "broken"

        def __call__(self, probs, x):
            raise RuntimeError("a defense failed")

    app = create_app(victim_dir, tmp_path / "k.db", (Broken(),), keys=[spec("alice-key-0001-0123456789abcdef012", 100)])
    with running(app) as url, client(url, "alice-key-0001-0123456789abcdef012") as c:
        r = c.post("/v1/predict", content=encode_images(images[:3].numpy()))
        assert r.status_code == 500 and r.json() == {"error": "internal server error"}
        assert c.get("/v1/usage").json()["used"] == 0
