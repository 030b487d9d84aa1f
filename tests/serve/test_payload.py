"""Request parsing and the output modes, without a server."""

import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from divqat.errors import DivqatError
from divqat.serve.payload import Limits, RequestError, parse_images
from divqat.wire import encode_images, parse_output_mode, render, to_probabilities

SHAPE = (1, 4, 4)
LIMITS = Limits(max_batch=8, max_body_bytes=1 << 20)

pixels = arrays(
    np.float32, st.tuples(st.integers(1, 8), st.just(1), st.just(4), st.just(4)), elements=st.floats(0, 1, width=32)
)


@settings(max_examples=50)
@given(pixels)
def test_both_forms_parse_to_the_same_exact_array(images):
    binary = parse_images(encode_images(images), SHAPE, LIMITS)
    nested = parse_images(json.dumps({"images": images.tolist()}).encode(), SHAPE, LIMITS)
    assert binary.dtype == nested.dtype == np.float32 and binary.flags.writeable
    np.testing.assert_array_equal(binary, images)
    np.testing.assert_array_equal(nested, images)


def b64(array) -> str:
    return base64.b64encode(np.asarray(array, "<f4").tobytes()).decode()


GOOD = np.full((1, *SHAPE), 0.5, np.float32)
BAD = [
    (b"{not json", 400, "malformed JSON"),
    (b"\xff\xfe", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"{}", 422, "no images"),
    (json.dumps({"images": GOOD.tolist(), "extra": 1}).encode(), 422, "unexpected fields"),
    (json.dumps({"images": []}).encode(), 422, "empty batch"),
    (json.dumps({"images": "pixels"}).encode(), 422, "must be a list"),
    (json.dumps({"images": [[[[0.5, 0.5]]], [[[0.5]]]]}).encode(), 422, "ragged"),
    (json.dumps({"images": [[[["0.5"] * 4] * 4]]}).encode(), 422, "numbers only"),
    (json.dumps({"images": [[[[True] * 4] * 4]]}).encode(), 422, "numbers only"),
    (json.dumps({"images": [[[[None] * 4] * 4]]}).encode(), 422, "numbers only"),
    (json.dumps({"images": np.full((1, 1, 4, 3), 0.5).tolist()}).encode(), 422, "shape (N, 1, 4, 4)"),
    (json.dumps({"images": np.full((1, 4, 4), 0.5).tolist()}).encode(), 422, "shape (N, 1, 4, 4)"),
    (b'{"images": [[[[NaN, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]]}', 422, "NaN or infinite"),
    (b'{"images": [[[[Infinity, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]]}', 422, "NaN or infinite"),
    (json.dumps({"images": [[[[1e300] * 4] * 4]]}).encode(), 422, "NaN or infinite"),
    (json.dumps({"images": (GOOD * 3).tolist()}).encode(), 422, "pixels must be in [0, 1]"),
    (json.dumps({"images": (GOOD - 0.6).tolist()}).encode(), 422, "pixels must be in [0, 1]"),
    (json.dumps({"images": np.zeros((9, *SHAPE)).tolist()}).encode(), 422, "over the limit of 8"),
    (json.dumps({"images_b64": "***", "shape": [1, *SHAPE]}).encode(), 400, "malformed base64"),
    (json.dumps({"images_b64": b64(GOOD)[:-4], "shape": [1, *SHAPE]}).encode(), 422, "needs 64 bytes"),
    (json.dumps({"images_b64": b64(GOOD), "shape": [1, 16]}).encode(), 422, "shape must be [N, C, H, W]"),
    (json.dumps({"images_b64": b64(GOOD), "shape": [1, 1, 4, True]}).encode(), 422, "shape must be"),
    (json.dumps({"images_b64": b64(GOOD), "shape": [1, *SHAPE], "dtype": "float64"}).encode(), 422, "dtype must be"),
    (json.dumps({"images_b64": b64(GOOD), "shape": [1, *SHAPE], "x": 0}).encode(), 422, "unexpected fields"),
    (json.dumps({"images_b64": 5, "shape": [1, *SHAPE]}).encode(), 422, "base64 string"),
    (json.dumps({"images_b64": "", "shape": [0, *SHAPE]}).encode(), 422, "empty batch"),
    (json.dumps({"images_b64": b64(GOOD), "shape": [2, 1, 4, 2]}).encode(), 422, "shape (N, 1, 4, 4)"),
    (json.dumps({"images_b64": b64(np.zeros((9, *SHAPE))), "shape": [9, *SHAPE]}).encode(), 422, "over the limit"),
    (json.dumps({"images_b64": b64(np.full((1, *SHAPE), np.nan)), "shape": [1, *SHAPE]}).encode(), 422, "NaN"),
    (json.dumps({"images_b64": b64(GOOD + 1), "shape": [1, *SHAPE]}).encode(), 422, "pixels must be in [0, 1]"),
    (json.dumps({"images_b64": "A" * 10_000, "shape": [1, *SHAPE]}).encode(), 422, "longer than"),
]


@pytest.mark.parametrize("body,status,message", BAD)
def test_bad_bodies_are_refused_with_one_line(body, status, message):
    with pytest.raises(RequestError) as refused:
        parse_images(body, SHAPE, LIMITS)
    assert refused.value.status == status and message in refused.value.message
    assert "\n" not in refused.value.message


def test_output_modes_render_and_invert():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
    full = render(probs, parse_output_mode("probabilities"))
    np.testing.assert_array_equal(to_probabilities(full, 3), probs)
    top2 = render(probs, parse_output_mode("top-k:2"))
    assert top2 == {
        "top_k": {"labels": [[1, 2], [0, 2]], "probabilities": [[probs[0, 1], probs[0, 2]], [0.5, probs[1, 2]]]}
    }
    np.testing.assert_allclose(to_probabilities(top2, 3), [[0, 6 / 9, 3 / 9], [5 / 8, 0, 3 / 8]], rtol=1e-6)
    assert render(probs, parse_output_mode("top-k:9"))["top_k"]["labels"] == [[1, 2, 0], [0, 2, 1]]  # k capped at K
    labels = render(probs, parse_output_mode("label"))
    assert labels == {"labels": [1, 0]}
    np.testing.assert_array_equal(to_probabilities(labels, 3), [[0, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("text", ["top-k", "top-k:0", "top-k:-1", "probs", "labels", ""])
def test_unknown_output_modes(text):
    with pytest.raises(DivqatError, match="unknown output mode"):
        parse_output_mode(text)
