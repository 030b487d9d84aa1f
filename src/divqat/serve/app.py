"""The HTTP API (FastAPI): a run's deployed model behind keys, budgets, rate limits, defenses and PRADA.

    GET|HEAD /healthz   no key
    GET  /v1/model      the contract: input shape, classes, per-request limits
    GET  /v1/usage      the caller's budget, used, remaining, output mode
    POST /v1/predict    a batch of images -> the caller's answer (see `wire.render`)
    GET  /docs          OpenAPI (Swagger UI, served from the package: no CDN); /openapi.json

A request's path, cheapest refusal first: bearer key looked up (401 unknown, 403 revoked or
blocked), request rate (429), budget left at all (429) - all before a byte of the body is
read; then the body, up to its size limit (413) and within its deadline (408); its shape
scanned (422/413) and the batch checked against the budget (429) before it is parsed; the
model, the defenses, the spend committed (with the watermark record, one transaction), PRADA
(outside that transaction), and only then the answer. Every refusal is a one-line JSON
{"error": ...} and spends nothing; a database that stays busy is a 503 with Retry-After.
"""

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from divqat import __version__
from divqat.serve import watermarks
from divqat.serve.database import Busy
from divqat.serve.keys import KEY_PATTERN, KeyRecord, KeySpec, KeyStore
from divqat.serve.model import ServedModel, load_served_model
from divqat.serve.payload import Limits, RequestError, parse_images, parse_raw, scan
from divqat.serve.prada import PradaConfig
from divqat.serve.prada_store import Conflict, PradaStore
from divqat.serve.ratelimit import RateLimit, RateLimiter
from divqat.serve.schema import ERROR, SHAPE_PARAMETER, predict_body
from divqat.wire import RAW_TYPE, SHAPE_HEADER, render

log = logging.getLogger("divqat.serve")
access = logging.getLogger("divqat.serve.access")
KEY_CACHE_S = 1.0  # a key's row is re-read at most this often (the spend re-checks budget and revocation)
BODY_TIMEOUT_S = 30.0  # the whole body within this, and no gap between its chunks longer than
CHUNK_TIMEOUT_S = 10.0
REQUEST_THREADS = 4
UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="divqat"'}


class Told:
    """What one batch told its key - a watermark's marks, scramble's orders - saved with the spend."""

    def __init__(self, n: int):
        from divqat.defenses.orders import Orders  # torch: only with defenses

        self.marks, self.orders = [], Orders(limit=n)

    def add(self, images, marks) -> None:
        self.marks.append(marks)


class Service:
    """Everything a request needs, shared by the worker threads."""

    def __init__(
        self,
        model: ServedModel,
        store: KeyStore,
        defenses: Sequence = (),
        limits: Limits | None = None,
        prada: PradaConfig | None = None,
        block_flagged: bool = False,
        rate: RateLimit | None = None,
    ):
        self.model, self.store, self.defenses, self.limits = model, store, tuple(defenses), limits or Limits()
        self.block_flagged = block_flagged
        self.rates = RateLimiter(rate or RateLimit())
        self.defense_lock = threading.Lock()  # defenses may hold generators: one batch at a time
        # Parsing nested lists holds the GIL: more at once only multiplies their memory.
        self.parse_slots = threading.BoundedSemaphore(2)
        self.keys: dict[str, tuple[float, KeyRecord]] = {}
        self.prada = None
        if prada is not None:
            from threadpoolctl import threadpool_limits  # (a scikit-learn dependency)

            threadpool_limits(1, user_api="blas")  # PRADA's GEMMs: see prada.py
            self.prada = PradaStore(store.db, prada, int(np.prod(model.input_shape)))

    # -- admission: everything that needs no body -------------------------------------------------
    def authenticate(self, authorization: str | None) -> KeyRecord:
        scheme, _, key = (authorization or "").partition(" ")
        if not authorization:
            raise RequestError(401, "missing API key: send the header Authorization: Bearer KEY", headers=UNAUTHORIZED)
        if scheme.lower() != "bearer" or not KEY_PATTERN.fullmatch(key.strip()):
            raise RequestError(401, "unknown API key", headers=UNAUTHORIZED)
        found = self.lookup(key.strip())
        if found is None:
            raise RequestError(401, "unknown API key", headers=UNAUTHORIZED)
        if found.revoked:
            raise RequestError(403, f"API key {found.id} was revoked")
        return found

    def lookup(self, key: str) -> KeyRecord | None:
        cached = self.keys.get(key)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_S:
            return cached[1]
        found = self.store.lookup(key)
        if len(self.keys) > 10_000:
            self.keys.clear()
        if found is not None:
            self.keys[key] = (time.monotonic(), found)
        return found

    def admit(self, authorization: str | None) -> KeyRecord:
        """The caller's key, if it may send a batch at all."""
        key = self.authenticate(authorization)
        wait = self.rates.take(key.rowid, requests=1)
        if wait:
            raise rate_error(key, wait)
        if self.block_flagged and key.flagged:
            raise RequestError(403, f"API key {key.id} is blocked: flagged as a model extraction attempt")
        if key.remaining == 0:
            raise budget_error(1, 0, key.budget)
        return key

    def usage(self, key: KeyRecord) -> dict:
        """What a client may know of its key: not PRADA's flag (it would say when to change keys)."""
        fresh = self.store.get(key.rowid)
        return {"key": fresh.id, "budget": fresh.budget, "used": fresh.used, "remaining": fresh.remaining,
                "output": str(fresh.output)}  # fmt: skip

    # -- the batch --------------------------------------------------------------------------------
    def defend(self, probs: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, Told | None]:
        """The answers after the defenses, and what a watermark or scramble among them told this batch."""
        if not self.defenses:
            return probs, None
        import torch  # only with defenses: they work on tensors

        from divqat.blackbox.victim import defend

        told = Told(len(images))
        with self.defense_lock, torch.no_grad():
            out = defend(torch.from_numpy(probs), torch.from_numpy(images), self.defenses, told)
            return out.to(torch.float32).numpy(), told

    def predict(self, key: KeyRecord, body: bytes, raw_shape: str | None = None) -> tuple[Response, int]:
        """One batch; `raw_shape` is the X-Images-Shape header of a raw (octet-stream) body."""
        if raw_shape is not None:
            images = parse_raw(body, raw_shape, self.model.input_shape, self.limits)
        else:
            n = scan(body, self.model.input_shape, self.limits)  # nested form: its images, before parsing
            if n and n > key.remaining:
                self.rates.take(key.rowid, images=n)
                raise budget_error(n, key.remaining, key.budget)
            with self.parse_slots:
                images = parse_images(body, self.model.input_shape, self.limits, scanned=True)
        n = len(images)
        wait = self.rates.take(key.rowid, images=n)
        if wait:
            raise rate_error(key, wait)
        if n > key.remaining:  # checked again, atomically, when spending
            raise budget_error(n, key.remaining, key.budget)
        probs = self.model.predict_proba(images)
        defended, told = self.defend(probs, images)
        answer = render(defended, key.output)
        with self.store.transaction() as con:
            remaining = self.store.spend(con, key.rowid, n)  # first: it locks the key's row (PostgreSQL)
            if remaining is not None and told is not None:  # what this key was told, committed with the spend
                for marks in told.marks:
                    watermarks.save(con, key.rowid, images, marks)
                if key.output.kind == "probabilities":
                    watermarks.save_orders(con, key.rowid, told.orders)
        if remaining is None:
            fresh = self.store.get(key.rowid)
            if fresh.revoked:
                raise RequestError(403, f"API key {key.id} was revoked")
            raise budget_error(n, fresh.remaining, fresh.budget)
        if self.prada is not None:  # spent first, then tested: other keys never wait for it
            self.watch(key, images, probs.argmax(1))
        response = Response(
            orjson.dumps(answer),  # 20x json.dumps; float32 values exactly (shortest round-trip repr)
            media_type="application/json",
            headers={"X-Queries-Remaining": str(remaining)},
        )
        return response, n

    def watch(self, key: KeyRecord, images: np.ndarray, classes: np.ndarray) -> None:
        """PRADA on an answered batch. The batch is paid for: a failure here is logged, never
        the client's error."""
        try:
            state = self.prada.observe(key.rowid, images, classes)
        except (Busy, Conflict) as e:
            log.warning("PRADA skipped a batch of key %s: %s", key.id, e)
            return
        if state.flagged and not key.flagged:
            with self.store.transaction() as con:
                self.store.flag(con, key.rowid)
            self.keys.clear()
            log.warning("PRADA flagged key %s after %d queries (W = %.4f)", key.id, state.seen, state.w)


def budget_error(n: int, remaining: int, budget: int) -> RequestError:
    return RequestError(
        429, f"query budget exhausted: {n} more queries asked, {remaining} of {budget} left", remaining=remaining
    )


def rate_error(key: KeyRecord, wait: float) -> RequestError:
    return RequestError(
        429, f"rate limit of key {key.id} exceeded: retry in {wait:.1f} s", headers={"Retry-After": str(int(wait) + 1)}
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes the limit, and (408) when it comes too slowly."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise RequestError(413, f"body of {length} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    deadline = time.monotonic() + BODY_TIMEOUT_S
    stream = request.stream().__aiter__()
    while True:
        left = deadline - time.monotonic()
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), min(left, CHUNK_TIMEOUT_S))
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise RequestError(
                408,
                f"the body did not arrive in time ({BODY_TIMEOUT_S:.0f} s in all, "
                f"{CHUNK_TIMEOUT_S:.0f} s between chunks)",
                headers={"Connection": "close"},
            ) from None
        except ClientDisconnect:
            raise RequestError(400, "the client disconnected before sending its body") from None
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@asynccontextmanager
async def serving_process(app):
    """Batches run in at most REQUEST_THREADS threads of a worker; the rest wait in the event
    loop, in order. With anyio's 40, dozens of threads convoy on the GIL: at 16 connections
    (wrk, 2 workers) 4 threads served 59,800 images/s at batch 64 against 47,500, p99 47 ms
    against 91. And the objects made at start-up (onnxruntime's, numpy's, the app's) are frozen
    out of the garbage collector: its full collections over them took batch 1's p99 from 9 to
    64 ms (docs/benchmarks.md)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
    gc.freeze()  # the start-up heap out of the collector's reach: full collections over it were the batch-1 tail
    yield


def error_response(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split()), **extra}, status_code=status, headers=headers)


class AccessLog:
    """One line per request, after its response: key id, method, path, status, images, ms, client.
    Pure ASGI (no BaseHTTPMiddleware): it costs a clock read and a log call."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [0]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state") or {}
            client = scope.get("client") or ("-", 0)
            access.info(
                "%s %s %s key=%s images=%d ms=%.1f client=%s",
                status[0] or "-", scope["method"], scope["path"], state.get("key_id", "-"), state.get("images", 0),
                1000 * (time.perf_counter() - start), client[0],
            )  # fmt: skip


def create_app(
    run_dir: Path,
    db_path,
    defenses: Sequence = (),
    *,
    keys: Sequence[KeySpec] = (),
    limits: Limits | None = None,
    prada: PradaConfig | None = None,
    block_flagged: bool = False,
    threads: int = 0,
    rate: RateLimit | None = None,
    key_secret: Path | None = None,
) -> FastAPI:
    """The app for a run directory's `model.onnx`; `defenses` (built and fitted) wrap its answers
    in order; `keys` (from a keys file) are declared in the store at `db_path` (an SQLite file
    or a postgresql:// URL): added, updated, and the keys an earlier file declared but this
    one dropped revoked."""
    limits = limits or Limits()
    store = KeyStore(db_path, secret_file=key_secret)
    if keys:
        for dropped in store.declare(list(keys)):
            log.warning("key %s revoked: the keys file no longer lists it", dropped.id)
    model = load_served_model(run_dir, threads)
    service = Service(model, store, defenses, limits, prada, block_flagged, rate)

    app = FastAPI(
        title="divqat victim",
        version=__version__,
        description=f"A divqat model served by its deployed ONNX file: float32 NCHW pixels in [0, 1] of shape "
        f"(N, {', '.join(map(str, model.input_shape))}) in, {model.num_classes} class probabilities (or top-k, or "
        "labels, by key) out. Every image is counted against the key's budget.",
        docs_url=None,
        redoc_url=None,
        lifespan=serving_process,
        redirect_slashes=False,  # a redirect's Location would come from the client's Host header
    )
    app.state.service = service
    app.add_middleware(AccessLog)
    scheme = {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key from `divqat keys add`."}}
    secured = [{"bearer": []}]

    @app.exception_handler(RequestError)
    async def refused(request: Request, e: RequestError):
        return error_response(e.status, e.message, e.headers, **e.extra)

    @app.exception_handler(Busy)
    async def busy(request: Request, e: Busy):
        log.warning("%s", e)
        return error_response(503, "the server is busy: try again shortly", {"Retry-After": "1"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):  # 404, and 405 with its Allow header
        return error_response(e.status_code, e.detail, getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)  # the last resort (Starlette re-raises after it): see predict
    async def internal(request: Request, e: Exception):
        log.error("unhandled %s on %s: %s", type(e).__name__, request.url.path, e, exc_info=e)
        return error_response(500, "internal server error")

    async def key_of(request: Request) -> KeyRecord:
        key = service.authenticate(request.headers.get("authorization"))
        request.state.key_id = key.id
        return key

    @app.api_route("/healthz", methods=["GET", "HEAD"], summary="Liveness: answers without a key")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model", summary="The model's input contract and the per-request limits",
             responses={401: ERROR}, openapi_extra={"security": secured})  # fmt: skip
    async def model_info(request: Request) -> dict:
        await key_of(request)
        return {
            "input_shape": list(model.input_shape),
            "num_classes": model.num_classes,
            "dtype": "float32",
            "pixel_range": [0.0, 1.0],
            "max_batch": limits.max_batch,
            "max_body_bytes": limits.max_body_bytes,
        }

    @app.get("/v1/usage", summary="The caller's budget, queries used and remaining",
             responses={401: ERROR, 403: ERROR}, openapi_extra={"security": secured})  # fmt: skip
    async def usage(request: Request) -> dict:
        return await run_in_threadpool(service.usage, await key_of(request))

    @app.post(
        "/v1/predict",
        summary="Answer a batch of images (each counted against the key's budget)",
        openapi_extra={
            "requestBody": predict_body(model.input_shape, limits.max_batch),
            "security": secured,
            "parameters": [SHAPE_PARAMETER],
        },  # fmt: skip
        responses={
            200: {"content": {"application/json": {"example": {"probabilities": [[0.9, 0.1]]}}}},
            **{status: ERROR for status in (400, 401, 403, 408, 413, 422, 429, 503)},
        },
    )
    async def predict(request: Request):
        key = service.admit(request.headers.get("authorization"))  # before a byte of the body is read
        request.state.key_id = key.id
        body = await read_body(request, limits.max_body_bytes)
        raw = request.headers.get("content-type", "").split(";")[0].strip().lower() == RAW_TYPE
        if not raw and SHAPE_HEADER in request.headers:  # a header that would say nothing: refused, not ignored
            raise RequestError(422, f"{SHAPE_HEADER} goes with Content-Type: {RAW_TYPE}")
        try:
            response, n = await run_in_threadpool(
                service.predict, key, body, request.headers.get(SHAPE_HEADER, "") if raw else None
            )
        except (RequestError, Busy):
            raise
        except Exception as e:  # answered here, not re-raised: uvicorn would drop the client's connection
            log.error("unhandled %s on /v1/predict: %s", type(e).__name__, e, exc_info=e)
            return error_response(500, "internal server error")
        request.state.images = n
        return response

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="divqat victim",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    mount_docs_assets(app)
    original_openapi = app.openapi

    def openapi():
        spec = original_openapi()
        spec.setdefault("components", {})["securitySchemes"] = scheme
        return spec

    app.openapi = openapi
    return app


def mount_docs_assets(app: FastAPI) -> None:
    """Swagger UI's files from the swagger-ui-bundle package: the docs page works offline."""
    import swagger_ui_bundle
    from starlette.staticfiles import StaticFiles

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
