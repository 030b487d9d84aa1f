"""A served victim (`divqat serve`) as a black-box backend: images -> probabilities over HTTP.

Batches go in the binary form (base64 float32), split to the server's per-request limit. The
answer is turned back into (N, K) probability rows whatever the key's output mode: top-k
scattered and renormalised, labels one-hot, as the `top-k` and `label-only` defenses do. The
budget is the server's: `usage()` reads it; a refusal (429) raises `BudgetExceeded`.
"""

import numpy as np
import torch
from torch import Tensor

from divqat.blackbox.victim import BudgetExceeded
from divqat.errors import DivqatError
from divqat.wire import encode_raw, parse_output_mode, to_probabilities


class HttpBackend:
    def __init__(self, url: str, key: str, timeout: float = 120.0):
        import httpx  # here, so that importing the black-box package stays light

        if not url.startswith(("http://", "https://")):
            raise DivqatError(f"--url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.httpx = httpx
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=timeout,
        )
        info = self.request("GET", "/v1/model")
        self.input_shape = tuple(info["input_shape"])
        self.num_classes = int(info["num_classes"])
        self.max_batch = int(info["max_batch"])
        self.output = parse_output_mode(self.usage()["output"])

    def request(self, method: str, path: str, content: bytes | None = None, headers: dict | None = None) -> dict:
        try:
            response = self.client.request(method, path, content=content, headers=headers)
        except self.httpx.HTTPError as e:
            raise DivqatError(f"{self.url}: cannot reach the server ({e})") from None
        try:
            body = response.json()
        except ValueError:
            raise DivqatError(f"{self.url}{path}: answered {response.status_code} without JSON") from None
        if response.status_code == 429:
            raise BudgetExceeded(f"{self.url}: {body.get('error', 'query budget exhausted')}")
        if response.status_code != 200:
            raise DivqatError(f"{self.url}{path}: {response.status_code} {body.get('error', body)}")
        return body

    def usage(self) -> dict:
        """The key's `budget`, `used`, `remaining` and `output` mode, as the server counts them."""
        return self.request("GET", "/v1/usage")

    @property
    def remaining(self) -> int:
        return int(self.usage()["remaining"])

    def __call__(self, images: Tensor) -> Tensor:
        if tuple(images.shape[1:]) != self.input_shape:
            raise DivqatError(f"the served model takes (N, {self.input_shape}) images, got {tuple(images.shape)}")
        array = images.detach().cpu().numpy()
        if len(array) > self.max_batch and len(array) > (left := self.remaining):  # refuse whole, as the server does
            raise BudgetExceeded(f"{self.url}: query budget exhausted: {len(array)} more queries asked, {left} left")
        out = [
            to_probabilities(
                self.request("POST", "/v1/predict", *encode_raw(array[i : i + self.max_batch])), self.num_classes
            )
            for i in range(0, len(array), self.max_batch)
        ]
        return torch.from_numpy(np.concatenate(out))

    def close(self) -> None:
        self.client.close()
