"""A hostile client against a real server: each test is a defect a probe found (issue 16),
failing before and passing now. Bounded: a few requests each, loopback only."""

import logging
import socket
import sqlite3
import time

import numpy as np
import pytest
from serving import client, running, spec

from divqat.serve import app as app_module
from divqat.serve import database, protocol
from divqat.serve.app import create_app
from divqat.serve.payload import Limits
from divqat.serve.ratelimit import RateLimit
from divqat.wire import encode_images

KEY = "alice-key-0001-0123456789abcdef012"
EMPTY = "small-key-001-0123456789abcdef012"
KEYS = [spec(KEY, 100_000), spec(EMPTY, 0)]


@pytest.fixture(scope="module")
def served(victim_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("hostile") / "keys.db"
    app = create_app(victim_dir, db, keys=KEYS, limits=Limits(max_batch=64, max_body_bytes=32 * 2**20))
    with running(app) as url:
        yield url, db


def raw(url: str, data: bytes, wait: float = 5.0, then: bytes = b"") -> bytes:
    """Send `data` on a fresh connection and read what comes back until the server closes or `wait` passes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        if then:
            sock.sendall(then)
        received = b""
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if b"\r\n\r\n" in received and b"content-length" in received.lower():
                    head, _, body = received.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    if len(body) >= length:
                        break
        except TimeoutError:
            pass
    return received


def test_deep_nesting_is_a_422_not_a_recursion_error(served, caplog):
    """Before: a body of 100,000 `[` raised RecursionError: a 500 and a traceback per request."""
    url, _ = served
    with caplog.at_level(logging.ERROR), client(url, KEY) as c:
        r = c.post("/v1/predict", content=b"[" * 100_000)
        assert r.status_code == 422 and "nested deeper" in r.json()["error"]
        r = c.post("/v1/predict", content=b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        assert r.status_code == 422
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_an_unknown_key_is_refused_before_its_body_is_read(served):
    """Before: any bearer string made the server read the whole declared body (30 MiB) first."""
    url, _ = served
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nobody-key-01-0123456789abcdef012\r\n"
        b"Content-Type: application/json\r\nContent-Length: 31457280\r\n\r\n"
    )
    start = time.monotonic()
    answer = raw(url, head, then=b"[" * 1024)  # 1 KiB of the 30 MiB announced
    assert answer.startswith(b"HTTP/1.1 401") and b"unknown API key" in answer
    assert b"www-authenticate: Bearer" in answer.lower().replace(b"bearer", b"Bearer")
    assert time.monotonic() - start < 3


def test_a_budget_0_key_is_refused_before_its_body_is_parsed(served):
    """Before: a budget-0 key's 1,024 nested images were parsed (0.41 s) before its 429."""
    url, _ = served
    body = b'{"images": [' + b",".join([b"[[[0.5]]]"] * 1024) + b"]}"
    with client(url, EMPTY) as c:
        r = c.post("/v1/predict", content=body)
    assert r.status_code == 429 and "budget" in r.json()["error"]


def test_more_numbers_than_a_batch_holds_are_refused_before_parsing(served):
    """Before: one 'image' of 15.7M zeros was parsed (1.78 s, +350 MB) before its 422."""
    url, _ = served
    body = b'{"images": [[[[' + b",".join([b"0"] * (64 * 784 + 100)) + b"]]]]}"
    with client(url, KEY) as c:
        r = c.post("/v1/predict", content=body)
    assert r.status_code == 422 and "more values" in r.json()["error"]


def test_a_stalled_connection_is_closed(served, monkeypatch):
    """Before: partial headers or a stalled body kept a connection open past 35 s."""
    url, _ = served
    monkeypatch.setattr(protocol.GuardedHttpToolsProtocol, "header_timeout", 1.0)
    start = time.monotonic()
    assert raw(url, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n", wait=10) == b""  # closed, nothing sent
    assert time.monotonic() - start < 5
    monkeypatch.setattr(app_module, "CHUNK_TIMEOUT_S", 1.0)
    head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 1000\r\n\r\n"
    answer = raw(url, head.encode() + b'{"images": [', wait=10)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in answer


def test_oversized_headers_are_refused(served):
    """Before: an 8 MiB Authorization header and 20,000 headers were accepted."""
    url, _ = served
    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * (1 << 20) + b"\r\n\r\n"
    assert raw(url, big).startswith(b"HTTP/1.1 400")
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(20_000)) + b"\r\n"
    assert raw(url, many).startswith(b"HTTP/1.1 400")


def test_a_locked_database_is_a_503_with_retry_after(victim_dir, tmp_path, monkeypatch):
    """Before: "database is locked" after the 30 s timeout was a 500."""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_S", 0.2)
    db = tmp_path / "keys.db"
    app = create_app(victim_dir, db, keys=KEYS)
    images = encode_images(np.zeros((2, 1, 28, 28), np.float32))
    with running(app) as url, client(url, KEY) as c:
        assert c.post("/v1/predict", content=images).status_code == 200
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            r = c.post("/v1/predict", content=images)
        finally:
            blocker.execute("ROLLBACK")
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]
        assert c.get("/v1/usage").json()["used"] == 2  # the refused batch spent nothing


def test_the_rate_limit_counts_refused_requests(victim_dir, tmp_path):
    """Before: no rate limit, and refusals spent nothing: a key holder got free CPU."""
    app = create_app(victim_dir, tmp_path / "keys.db", keys=KEYS, rate=RateLimit(requests_per_s=5, images_per_s=0))
    with running(app) as url, client(url, KEY) as c:
        statuses = [c.post("/v1/predict", content=b"not json").status_code for _ in range(10)]
        assert statuses[:5] == [400] * 5 and set(statuses[5:]) == {429}  # the burst, then refused
        r = c.post("/v1/predict", content=encode_images(np.zeros((1, 1, 28, 28), np.float32)))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_protocol_details(served):
    """405 with Allow, 401 with WWW-Authenticate, HEAD on health, no Host-derived redirect,
    error bodies without Python's wording, docs without a CDN."""
    url, _ = served
    with client(url, None) as anonymous, client(url, KEY) as c:
        r = anonymous.get("/v1/predict")
        assert r.status_code == 405 and r.headers["allow"] == "POST" and set(r.json()) == {"error"}
        r = anonymous.get("/v1/usage")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.head("/healthz").status_code == 200
        r = c.post("/v1/predict/", content=b"{}", headers={"Host": "evil.example"})
        assert r.status_code == 404 and "location" not in r.headers
        r = c.post("/v1/predict", content=b'{"images": [[[[' + b"9" * 5000 + b"]]]]}")
        assert r.status_code == 400 and "sys." not in r.text and "digits" in r.json()["error"]
        page = anonymous.get("/docs")
        assert page.status_code == 200 and "cdn" not in page.text.lower() and "/docs/assets/" in page.text
        assert anonymous.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_the_schema_states_the_input_shape_and_its_example_answers_200(served):
    """Before: the OpenAPI schema never stated the input shape, and its own example was a 422."""
    url, _ = served
    with client(url, KEY) as c:
        spec = c.get("/openapi.json").json()
        body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
        nested = body["schema"]["oneOf"][0]["properties"]["images"]
        sizes = []
        while nested.get("type") == "array":
            nested = nested["items"]
            sizes.append((nested.get("minItems"), nested.get("maxItems")))
        assert sizes[:3] == [(1, 1), (28, 28), (28, 28)]
        r = c.post("/v1/predict", json=body["example"])
        assert r.status_code == 200 and len(r.json()["probabilities"]) == 1


def test_the_access_log_says_who_asked_what(served, caplog):
    """Before: --access-log logged no request at all."""
    url, _ = served
    access = logging.getLogger("divqat.serve.access")
    access.addHandler(caplog.handler)  # the serve loggers do not propagate (their own stderr handler)
    try:
        with caplog.at_level(logging.INFO, logger="divqat.serve.access"), client(url, KEY) as c:
            c.post("/v1/predict", content=encode_images(np.zeros((3, 1, 28, 28), np.float32)))
            c.get("/nowhere")
    finally:
        access.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "divqat.serve.access"]
    assert any(line.startswith("200 POST /v1/predict key=") and "images=3" in line for line in lines), lines
    assert any(line.startswith("404 GET /nowhere key=-") for line in lines), lines
