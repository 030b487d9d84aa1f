"""PRADA (Juuti, Szyller, Marchal and Asokan, EuroS&P 2019): detect model extraction per client
from the distribution of the distances between its queries.

For each query x that the victim puts in class c: d_min = the smallest L2 distance (pixels in
[0, 1]) from x to the client's growing set G_c of earlier class-c queries. d_min joins the
list D; x joins G_c when d_min > T_c, and T_c = max(T_c, mean - std of G_c's own distances)
(the set's first member counts as distance 0, as in the authors' code). Natural queries give
a roughly normal D; synthetic ones (JBDA's small steps, a generator's samples) do not. Once
|D| > 100, Shapiro-Wilk's W on D (without values more than 3 std from its mean) below delta
flags the client.

What is kept, and why it stays bounded:
- G_c: the members themselves (float32 rows), at most `max_members` per class (once full, the
  set only answers distance queries) and at most `max_key_bytes` over all classes of a client
  (the oldest members are evicted first), so a client costs the same whatever the number of
  classes. The nearest member of a batch is found with one GEMM per
  class (|g|^2 + |x|^2 - 2 g.x) and its distance then recomputed exactly, since the expansion
  cancels badly for near-duplicates, the very queries that matter here.
- G_c's distances: only count, sum and sum of squares (all T_c needs), per class.
- D: the last `window` values (Shapiro-Wilk's p-value approximation holds up to 5,000).
So a client costs at most `max_key_bytes` (8 MiB: 2,675 members at 28x28, 682 at 32x32x3) and
20 KB of D, whatever its number of queries or the model's number of classes.

Speed: a batch of 64 random images against full sets (3 classes x 1,000) takes 2.9 ms with
numpy's BLAS on one thread and 9-64 ms with OpenBLAS's two threads on the busy 2-core
machine (its threads spin against the server's), so a server with PRADA runs BLAS on one
thread: requests are its parallelism.

Processing a batch gives exactly the state of processing its queries one by one (a property
test checks it) as long as no member is evicted (eviction runs after each batch); W is computed
once per `observe` call, so a server tests after each request.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import shapiro


@dataclass(frozen=True)
class PradaConfig:
    delta: float = 0.93  # flag when W < delta: calibrated on benign Fashion-MNIST streams (docs/serving.md)
    min_distances: int = 100  # test once |D| exceeds this (the paper's 100)
    window: int = 5000  # D keeps this many most recent distances
    max_members: int = 1000  # growing-set members kept per class
    outlier_std: float = 3.0  # D's values further than this many std from its mean are left out of the test
    max_key_bytes: int = 8 * 2**20  # members kept per client over all classes, oldest evicted first
    cache_bytes: int = 256 * 2**20  # clients' states a server keeps in memory, least recently used evicted

    def __post_init__(self):
        if not 0 < self.delta <= 1:
            raise ValueError(f"delta must be in (0, 1], got {self.delta}")
        if (
            self.min_distances < 3
            or self.window <= self.min_distances
            or self.max_members < 1
            or self.max_key_bytes < 1
        ):
            raise ValueError(f"bad PRADA sizes: {self}")


class GrowingSet:
    """One class's members (a float32 buffer that doubles when full) and its distance statistics."""

    def __init__(self, dim: int):
        self.buffer = np.empty((8, dim), np.float32)
        self.sq_norms = np.empty(8, np.float32)
        self.seqs = np.empty(8, np.int64)  # each member's place in the client's order of joining
        self.size = 0
        self.count, self.total, self.total_sq, self.threshold = 0, 0.0, 0.0, 0.0

    @property
    def members(self) -> np.ndarray:
        return self.buffer[: self.size]

    def add(self, x: np.ndarray, distance: float, seq: int) -> None:
        if self.size == len(self.buffer):  # grow by doubling (from 8: eviction may leave it empty)
            grow = max(8, self.size)
            self.buffer = np.concatenate([self.buffer, np.empty((grow, self.buffer.shape[1]), np.float32)])
            self.sq_norms = np.concatenate([self.sq_norms, np.empty(grow, np.float32)])
            self.seqs = np.concatenate([self.seqs, np.empty(grow, np.int64)])
        self.buffer[self.size] = x
        self.sq_norms[self.size] = float(x @ x)
        self.seqs[self.size] = seq
        self.size += 1
        self.count += 1
        self.total += distance
        self.total_sq += distance * distance
        mean = self.total / self.count
        std = max(self.total_sq / self.count - mean * mean, 0.0) ** 0.5
        self.threshold = max(self.threshold, mean - std)

    def drop_before(self, seq: int) -> int:
        """Evict the members that joined before `seq` (they are the first ones); returns how many."""
        k = int(np.searchsorted(self.seqs[: self.size], seq))
        if k:
            keep = slice(k, self.size)
            self.buffer, self.sq_norms = self.buffer[keep].copy(), self.sq_norms[keep].copy()
            self.seqs, self.size = self.seqs[keep].copy(), self.size - k
        return k

    def nearest(self, x: np.ndarray) -> np.ndarray:
        """For each row of x, its distance to the nearest current member (exact, float64)."""
        members = self.members
        sq = self.sq_norms[: self.size, None] - 2.0 * (members @ x.T)  # |x|^2 is the same down a column
        best = members[sq.argmin(0)]
        return np.sqrt(((x.astype(np.float64) - best) ** 2).sum(1))


@dataclass
class PradaState:
    """One client's detector state."""

    dim: int
    sets: dict[int, GrowingSet] = field(default_factory=dict)
    distances: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))  # D, in query order
    seen: int = 0  # queries observed
    w: float | None = None  # Shapiro-Wilk's W after the last observe (None until |D| > min_distances)
    detected_at: int | None = None  # queries seen when W first fell below delta
    joins: int = 0  # members that ever joined (the next one's seq)
    oldest: int = 0  # members that joined before this seq were evicted

    def observe(self, images: np.ndarray, classes: np.ndarray, config: PradaConfig) -> list[tuple[int, int, int]]:
        """Add a batch (in query order); returns (class, row, seq) of the queries that joined a
        growing set; members older than `self.oldest` were evicted to keep the client in bounds."""
        x = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.float32)
        if x.shape[1] != self.dim:
            raise ValueError(f"queries of {x.shape[1]} values, detector state of {self.dim}")
        classes = np.asarray(classes, dtype=np.int64)
        d_min = np.full(len(x), np.nan)
        joined = []
        for c in np.unique(classes).tolist():
            rows = np.flatnonzero(classes == c)
            xc = x[rows]
            s = self.sets.get(c)
            s = s if s is not None and s.size else None  # a set emptied by eviction is founded again
            to_old = s.nearest(xc) if s else np.full(len(rows), np.inf)
            # Queries of this batch that join the set are candidates for the later ones: their
            # squared distances from one GEMM pick the nearest, whose distance is then exact.
            sq = np.einsum("ij,ij->i", xc, xc)
            among = sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T)
            new: list[int] = []  # positions in xc of this batch's new members
            for i, row in enumerate(rows):
                if s is None:  # the class's first query founds its set and has no distance
                    s = self.sets[c] = self.sets.get(c) or GrowingSet(self.dim)
                    s.add(xc[i], 0.0, self.joins)
                    joined.append((c, int(row), self.joins))
                    self.joins += 1
                    new.append(i)
                    continue
                d = to_old[i]
                if new:
                    j = new[int(among[i, new].argmin())]
                    d = min(d, float(np.sqrt(((xc[i].astype(np.float64) - xc[j]) ** 2).sum())))
                d_min[row] = d
                if d > s.threshold and s.size < config.max_members:
                    s.add(xc[i], d, self.joins)
                    joined.append((c, int(row), self.joins))
                    self.joins += 1
                    new.append(i)
        new = d_min[~np.isnan(d_min)].astype(np.float32)
        self.distances = np.concatenate([self.distances, new])[-config.window :]
        self.seen += len(x)
        self.w = shapiro_w(self.distances, config)
        if self.w is not None and self.w < config.delta and self.detected_at is None:
            self.detected_at = self.seen
        self.evict(max(1, config.max_key_bytes // (4 * self.dim)))
        return joined

    def evict(self, keep: int) -> None:
        """Keep the `keep` most recent members over all classes."""
        over = self.members - keep
        if over > 0:
            self.oldest = int(np.sort(np.concatenate([s.seqs[: s.size] for s in self.sets.values()]))[over])
            for s in self.sets.values():
                s.drop_before(self.oldest)

    @property
    def members(self) -> int:
        return sum(s.size for s in self.sets.values())

    @property
    def nbytes(self) -> int:
        return 4 * self.dim * self.members + self.distances.nbytes

    @property
    def flagged(self) -> bool:
        return self.detected_at is not None

    def class_stats(self) -> np.ndarray:
        """(classes, 5) float64 rows: class, count, sum, sum of squares, threshold (for storage)."""
        rows = [(c, s.count, s.total, s.total_sq, s.threshold) for c, s in sorted(self.sets.items())]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 5)

    @classmethod
    def restore(cls, dim: int, members: dict[int, np.ndarray], stats: np.ndarray, distances: np.ndarray, **rest):
        """The inverse of (members, class_stats(), distances): how the server reloads a client.
        `members[c]` is a list of (seq, pixels) in joining order."""
        state = cls(dim, distances=np.asarray(distances, np.float32), **rest)
        for c, count, total, total_sq, threshold in stats.tolist():
            s = state.sets[int(c)] = GrowingSet(dim)
            seqs, rows = zip(*members.get(int(c), []), strict=True) if members.get(int(c)) else ((), ())
            s.buffer = np.array(rows, dtype=np.float32).reshape(-1, dim)
            s.seqs = np.array(seqs, dtype=np.int64)
            s.size = len(s.buffer)
            s.sq_norms = np.einsum("ij,ij->i", s.buffer, s.buffer)
            s.count, s.total, s.total_sq, s.threshold = int(count), total, total_sq, threshold
        return state


def shapiro_w(distances: np.ndarray, config: PradaConfig) -> float | None:
    if len(distances) <= config.min_distances:
        return None
    d = distances.astype(np.float64)
    mean, std = d.mean(), d.std()
    kept = d[np.abs(d - mean) <= config.outlier_std * std] if std > 0 else d
    if len(kept) < 3 or np.ptp(kept) == 0:  # all distances equal: scipy returns W = 1 with a warning
        return 1.0
    return float(shapiro(kept).statistic)
