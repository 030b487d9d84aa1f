"""The wire format of a served victim, shared by both faces and owned by neither: the server
(divqat/serve) writes it, the HTTP black-box backend (divqat/blackbox/http.py) reads it.

A request body's binary form is `{"images_b64": <base64 little-endian float32>, "shape": [N, C,
H, W]}` (`encode_images`); the server also takes nested lists (serve/payload.py parses both).

What a key's caller receives: full probabilities, the top k, or only the label.

    probabilities   {"probabilities": [[p_0, ..., p_K-1], ...]}
    top-k:K         {"top_k": {"labels": [[c_1, ..., c_K], ...], "probabilities": [[p_1, ..., p_K], ...]}}
    label           {"labels": [c, ...]}

`to_probabilities` turns any answer back into (N, K) vectors for a client: the top k scattered
and renormalised (as the `top-k` defense does), a label one-hot (as `label-only` does).
"""

import base64
import json
import re
from dataclasses import dataclass

import numpy as np

from divqat.errors import DivqatError

MODES = ("probabilities", "top-k:K", "label")


@dataclass(frozen=True)
class OutputMode:
    kind: str  # probabilities, top-k or label
    k: int = 0  # top-k only

    def __str__(self) -> str:
        return f"top-k:{self.k}" if self.kind == "top-k" else self.kind


def parse_output_mode(text: str) -> OutputMode:
    text = str(text).strip()
    if text in ("probabilities", "label"):
        return OutputMode(text)
    match = re.fullmatch(r"top-k:(\d{1,6})", text)
    if match and int(match[1]) >= 1:
        return OutputMode("top-k", int(match[1]))
    raise DivqatError(f"unknown output mode {text!r}; choose from probabilities, top-k:K (K >= 1), label")


def render(probs: np.ndarray, mode: OutputMode) -> dict:
    if mode.kind == "probabilities":
        return {"probabilities": probs.tolist()}
    if mode.kind == "label":
        return {"labels": probs.argmax(1).tolist()}
    k = min(mode.k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return {"top_k": {"labels": top.tolist(), "probabilities": np.take_along_axis(probs, top, 1).tolist()}}


def to_probabilities(answer: dict, num_classes: int) -> np.ndarray:
    """The client's side of `render`: (N, num_classes) float32 rows that sum to one."""
    if "probabilities" in answer:
        return np.asarray(answer["probabilities"], dtype=np.float32)
    if "labels" in answer:
        labels = np.asarray(answer["labels"], dtype=np.int64)
        return np.eye(num_classes, dtype=np.float32)[labels]
    if "top_k" in answer:
        labels = np.asarray(answer["top_k"]["labels"], dtype=np.int64)
        values = np.asarray(answer["top_k"]["probabilities"], dtype=np.float32).clip(0)
        out = np.zeros((len(labels), num_classes), np.float32)
        np.put_along_axis(out, labels, values, 1)
        return out / out.sum(1, keepdims=True).clip(1e-30)
    raise DivqatError(f"answer has none of probabilities, labels, top_k: {sorted(answer)}")


RAW_TYPE = "application/octet-stream"
SHAPE_HEADER = "X-Images-Shape"


def encode_raw(images: np.ndarray) -> tuple[bytes, dict]:
    """A request body in the raw form, and its headers: the float32 bytes themselves, the shape
    in a header. No base64, no JSON: the cheapest form to send and to read."""
    array = np.ascontiguousarray(images, dtype="<f4")
    return array.tobytes(), {"Content-Type": RAW_TYPE, SHAPE_HEADER: ",".join(map(str, array.shape))}


def encode_images(images: np.ndarray) -> bytes:
    """A client's request body in the binary form (what `divqat attack --backend http` sends)."""
    array = np.ascontiguousarray(images, dtype="<f4")
    doc = {"images_b64": base64.b64encode(array.tobytes()).decode("ascii"), "shape": list(array.shape)}
    return json.dumps(doc).encode()
