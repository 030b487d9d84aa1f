"""A server's secret and an image's coarse, robust code under it: what keys the defenses that
must answer the same picture the same way every time (watermark, scramble).

The coarse form: the image's 7x7 average-pooled thumbnail projected on `PROJECTIONS` random
directions drawn from the secret, each projection cut into steps of `STEP`; its digest is an
HMAC-SHA-256 of those cells under the secret. Asking the same picture again (from any key,
after a restart) gives the same digest; images that look alike at that scale share it.

The secret is read from a file (at least 16 bytes; `divqat secret runs/wm.key` makes one)
and never appears in an answer, a parameter list, a log or a result file: only its path does.
"""

import hashlib
import hmac
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from divqat.errors import DivqatError

THUMBNAIL = 7  # the coarse form: a 7x7 average per channel
PROJECTIONS = 12  # keyed random directions of the thumbnail
STEP = 0.25  # each projection in steps of this (pixels in [0, 1]); noise must cross one to move a code
MIN_SECRET_BYTES = 16


def read_secret(path: str, defense: str) -> bytes:
    if not path:
        raise DivqatError(
            f"defense {defense!r} needs a secret: secret_file=PATH, a file of at least 16 random bytes "
            "(divqat secret runs/wm.key makes one)"
        )
    try:
        secret = Path(path).read_bytes()
    except FileNotFoundError:
        raise DivqatError(f"defense {defense!r}: secret file {path} does not exist") from None
    except OSError as e:
        raise DivqatError(f"defense {defense!r}: cannot read the secret file {path} ({e.strerror or e})") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise DivqatError(f"defense {defense!r}: the secret in {path} is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


class ImageKey:
    """The secret of `secret_file` (read now: a missing one fails before any answer) and the
    coarse codes and digests of images under it."""

    def __init__(self, secret_file: str, defense: str):
        self._secret = read_secret(secret_file, defense)
        self._directions: Tensor | None = None

    @classmethod
    def of(cls, secret: bytes) -> "ImageKey":
        """A key from the secret's bytes themselves (choosing one: defenses/watermark_key.py)."""
        if len(secret) < MIN_SECRET_BYTES:
            raise DivqatError(f"a secret is at least {MIN_SECRET_BYTES} bytes")
        key = cls.__new__(cls)
        key._secret, key._directions = secret, None
        return key

    def __repr__(self) -> str:  # never the secret
        return "ImageKey(...)"

    def fingerprint(self, label: bytes) -> str:
        """Names the secret without revealing it (an HMAC of a constant)."""
        return self.digest(label).hex()[:16]

    def digest(self, label: bytes) -> bytes:
        """A 32-byte HMAC of a constant: what draws a keyed choice that is not an image's."""
        return hmac.new(self._secret, label, hashlib.sha256).digest()

    def directions(self, dim: int) -> Tensor:
        """Unit directions drawn from a generator seeded by the secret (the same in every process)."""
        if self._directions is None or self._directions.shape[1] != dim:
            seed = int.from_bytes(hmac.new(self._secret, b"directions", hashlib.sha256).digest()[:8], "little")
            d = torch.randn(PROJECTIONS, dim, generator=torch.Generator().manual_seed(seed >> 1), dtype=torch.float64)
            self._directions = d / d.norm(dim=1, keepdim=True)
        return self._directions

    def codes(self, images: Tensor) -> Tensor:
        """(N, PROJECTIONS) integer cells of the images' coarse form."""
        thumbs = F.adaptive_avg_pool2d(images.detach().cpu().double(), THUMBNAIL).flatten(1)
        return torch.floor(thumbs @ self.directions(thumbs.shape[1]).T / STEP).long()

    @staticmethod
    def name(digest: bytes) -> str:
        """A code's name in a record: a hash of its digest, so a record reveals nothing of the key."""
        return hashlib.sha256(digest).hexdigest()[:32]

    def digests(self, images: Tensor) -> list[bytes]:
        """One 32-byte HMAC per image, of its coarse code."""
        return [hmac.new(self._secret, row.astype("<i8").tobytes(), hashlib.sha256).digest()
                for row in self.codes(images).numpy()]  # fmt: skip
