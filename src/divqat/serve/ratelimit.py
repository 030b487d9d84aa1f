"""Per-key rate limits: requests and images per second, token buckets in the server's memory.

Every request a key sends is counted, refused ones included (a refusal costs the server too),
and so is every image of a batch the server parsed, whether it was then answered or refused.
A key over either rate gets a 429 with Retry-After, before its body is read when the request
rate is what it passed. The buckets hold one second of the rate (the burst). With
`--workers N`, each worker holds its own buckets at rate / N, so the sum is the stated rate
when the kernel spreads connections evenly (approximately: a key on one connection meets
one worker's share).
"""

import math
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    requests_per_s: float = 200.0  # 0: no limit
    images_per_s: float = 20_000.0  # 0: no limit

    def __post_init__(self):
        for name in ("requests_per_s", "images_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def share(self, workers: int) -> "RateLimit":
        return RateLimit(self.requests_per_s / workers, self.images_per_s / workers)


class Bucket:
    def __init__(self, rate: float):
        self.rate, self.tokens, self.stamp = rate, rate, time.monotonic()

    def take(self, n: float) -> float:
        """Take n tokens (going into debt if need be); the seconds until the bucket is back to 0."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class RateLimiter:
    """`take(key, requests, images)` -> 0 when within the limits, else the seconds to wait."""

    def __init__(self, limit: RateLimit, max_keys: int = 100_000):
        self.limit, self.max_keys = limit, max_keys
        self.buckets: dict[tuple[int, str], Bucket] = {}
        self.lock = threading.Lock()

    def take(self, key: int, requests: int = 0, images: int = 0) -> float:
        wait = 0.0
        with self.lock:
            if len(self.buckets) > self.max_keys:  # bounded memory: every key starts afresh (rare: 100k keys)
                self.buckets.clear()
            for kind, n, rate in (
                ("requests", requests, self.limit.requests_per_s),
                ("images", images, self.limit.images_per_s),
            ):
                if n and rate:
                    bucket = self.buckets.setdefault((key, kind), Bucket(rate))
                    wait = max(wait, bucket.take(n))
        return wait
