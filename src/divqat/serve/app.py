"""The HTTP API (FastAPI): a run's deployed model behind keys, budgets, defenses and PRADA.

    GET  /healthz       no key
    GET  /v1/model      the contract: input shape, classes, per-request limits
    GET  /v1/usage      the caller's budget, used, remaining, output mode
    POST /v1/predict    a batch of images -> the caller's answer (see `outputs`)
    GET  /docs          OpenAPI (Swagger UI); /openapi.json

A request's path: bearer key looked up (401 unknown, 403 revoked or blocked), body read up to
the size limit (413), parsed and checked (400/413/422), budget checked (429), model run,
defenses applied, then the spend committed (with PRADA's update, in one transaction) and only
then the answer sent. Every refusal is a one-line JSON {"error": ...} and spends nothing; a
batch that would pass the budget is refused whole, as by `BlackBoxVictim`.
"""

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from divqat import __version__
from divqat.serve import watermarks
from divqat.serve.keys import KEY_PATTERN, KeyRecord, KeySpec, KeyStore
from divqat.serve.model import ServedModel, load_served_model
from divqat.serve.payload import Limits, RequestError, parse_images
from divqat.serve.prada import PradaConfig
from divqat.serve.prada_store import PradaStore
from divqat.wire import render

log = logging.getLogger("divqat.serve")

PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {
                        "title": "nested lists",
                        "type": "object",
                        "required": ["images"],
                        "properties": {
                            "images": {"type": "array", "description": "(N, C, H, W) float pixels in [0, 1]"}
                        },
                    },
                    {
                        "title": "binary",
                        "type": "object",
                        "required": ["images_b64", "shape"],
                        "properties": {
                            "images_b64": {"type": "string", "description": "base64 of little-endian float32"},
                            "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
                            "dtype": {"type": "string", "enum": ["float32"], "default": "float32"},
                        },
                    },
                ]
            },
            "example": {"images": [[[[0.0, 0.5], [1.0, 0.25]]]]},
        }
    },
}
ERROR = {"content": {"application/json": {"example": {"error": "one line saying what is wrong"}}}}


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
    ):
        self.model, self.store, self.defenses, self.limits = model, store, tuple(defenses), limits or Limits()
        self.block_flagged = block_flagged
        self.defense_lock = threading.Lock()  # defenses may hold generators: one batch at a time
        self.prada = None
        if prada is not None:
            from threadpoolctl import threadpool_limits  # (a scikit-learn dependency)

            threadpool_limits(1, user_api="blas")  # PRADA's GEMMs: see prada.py
            with store.transaction() as con:
                self.prada = PradaStore(con, prada, int(np.prod(model.input_shape)))

    def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> KeyRecord:
        if credentials is None:
            raise RequestError(401, "missing API key: send the header Authorization: Bearer KEY")
        key = credentials.credentials
        found = self.store.lookup(key) if KEY_PATTERN.fullmatch(key) else None
        if found is None:
            raise RequestError(401, "unknown API key")
        if found.revoked:
            raise RequestError(403, f"API key {found.id} was revoked")
        return found

    def usage(self, credentials) -> dict:
        key = self.authenticate(credentials)
        answer = {
            "key": key.id,
            "budget": key.budget,
            "used": key.used,
            "remaining": key.remaining,
            "output": str(key.output),
            "flagged": key.flagged is not None,
        }
        return answer

    def defend(self, probs: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, list]:
        """The answers after the defenses, and the marks any watermark among them put on this batch."""
        if not self.defenses:
            return probs, []
        import torch  # only with defenses: they work on tensors

        from divqat.blackbox.victim import defend

        class Told(list):  # the batch's marks, saved with the spend (serve/watermarks.py)
            def add(self, images, marks):
                self.append(marks)

        told = Told()
        with self.defense_lock, torch.no_grad():
            out = defend(torch.from_numpy(probs), torch.from_numpy(images), self.defenses, told)
            return out.to(torch.float32).numpy(), told

    def predict(self, credentials, body: bytes) -> Response:
        key = self.authenticate(credentials)
        if self.block_flagged and key.flagged:
            raise RequestError(403, f"API key {key.id} is blocked: flagged as a model extraction attempt")
        images = parse_images(body, self.model.input_shape, self.limits)
        n = len(images)
        if n > key.remaining:  # checked again, atomically, when spending
            raise budget_error(n, key.remaining, key.budget)
        probs = self.model.predict_proba(images)
        defended, marks = self.defend(probs, images)
        answer = render(defended, key.output)
        with self.store.transaction() as con:
            remaining = self.store.spend(con, key.rowid, n)
            if remaining is None:
                fresh = self.store.get(key.rowid)
                if fresh.revoked:
                    raise RequestError(403, f"API key {key.id} was revoked")
                raise budget_error(n, fresh.remaining, fresh.budget)
            for batch_marks in marks:  # what this key was told, committed with the spend
                watermarks.save(con, key.rowid, images, batch_marks)
            if self.prada is not None:
                state = self.prada.observe(con, key.rowid, images, probs.argmax(1))
                if state.flagged and not key.flagged:
                    self.store.flag(con, key.rowid)
                    log.warning("PRADA flagged key %s after %d queries (W = %.4f)", key.id, state.seen, state.w)
        return Response(
            json.dumps(answer, separators=(",", ":")),
            media_type="application/json",
            headers={"X-Queries-Remaining": str(remaining)},
        )


def budget_error(n: int, remaining: int, budget: int) -> RequestError:
    return RequestError(
        429, f"query budget exhausted: {n} more queries asked, {remaining} of {budget} left", remaining=remaining
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes the limit, before it is all read."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise RequestError(413, f"body of {length} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def error_response(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split()), **extra}, status_code=status)


def create_app(
    run_dir: Path,
    db_path: Path,
    defenses: Sequence = (),
    *,
    keys: Sequence[KeySpec] = (),
    limits: Limits | None = None,
    prada: PradaConfig | None = None,
    block_flagged: bool = False,
    threads: int = 0,
) -> FastAPI:
    """The app for a run directory's `model.onnx`; `defenses` (built and fitted) wrap its answers
    in order; `keys` (from a keys file) are added or updated in the database at `db_path`."""
    limits = limits or Limits()
    store = KeyStore(db_path)
    if keys:
        store.declare(list(keys))
    service = Service(load_served_model(run_dir, threads), store, defenses, limits, prada, block_flagged)
    bearer = HTTPBearer(auto_error=False, description="An API key from `divqat keys add` or the keys file.")
    Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]

    app = FastAPI(
        title="divqat victim",
        version=__version__,
        description="A divqat model served by its deployed ONNX file: float32 NCHW pixels in [0, 1] in, "
        "class probabilities (or top-k, or labels, by key) out. Every query is counted against the key's budget.",
    )
    app.state.service = service

    @app.exception_handler(RequestError)
    async def refused(request: Request, e: RequestError):
        return error_response(e.status, e.message, **e.extra)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return error_response(e.status_code, e.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)  # the last resort (Starlette re-raises after it): see predict
    async def internal(request: Request, e: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal server error")

    @app.get("/healthz", summary="Liveness: answers without a key")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model", summary="The model's input contract and the per-request limits", responses={401: ERROR})
    def model_info(credentials: Credentials) -> dict:
        service.authenticate(credentials)
        return {
            "input_shape": list(service.model.input_shape),
            "num_classes": service.model.num_classes,
            "dtype": "float32",
            "pixel_range": [0.0, 1.0],
            "max_batch": limits.max_batch,
            "max_body_bytes": limits.max_body_bytes,
        }

    @app.get("/v1/usage", summary="The caller's budget, queries used and remaining", responses={401: ERROR})
    def usage(credentials: Credentials) -> dict:
        return service.usage(credentials)

    @app.post(
        "/v1/predict",
        summary="Answer a batch of images (counted against the key's budget)",
        openapi_extra={"requestBody": PREDICT_BODY},
        responses={
            200: {"content": {"application/json": {"example": {"probabilities": [[0.9, 0.1]]}}}},
            **{status: ERROR for status in (400, 401, 403, 413, 422, 429)},
        },
    )
    async def predict(request: Request, credentials: Credentials):
        if credentials is None:  # refuse before reading a body nobody will pay for
            raise RequestError(401, "missing API key: send the header Authorization: Bearer KEY")
        body = await read_body(request, limits.max_body_bytes)
        try:
            return await run_in_threadpool(service.predict, credentials, body)
        except RequestError:
            raise
        except Exception:  # answered here, not re-raised: uvicorn would drop the client's connection
            log.exception("unhandled error on /v1/predict")
            return error_response(500, "internal server error")

    return app
