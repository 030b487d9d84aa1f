"""PRADA's per-key state in the database, so detection survives restarts and spans replicas.

    prada_state    one row per key: queries seen, members that ever joined, W, when detected,
                   D (float32 blob, at most `window` values), per-class statistics (float64 blob)
    prada_members  one row per growing-set member (class, its seq, float32 pixels): appended when
                   a query joins, deleted when evicted (oldest first, past `max_key_bytes`) or when
                   the key is revoked or its flag cleared

Off the spending path: a request spends first (serve/app.py), then `observe` runs the
detector outside any database transaction, with the key's state from memory, and writes the
result in a short transaction that succeeds only if the stored count of queries seen is still
the one the computation started from. Another process (a worker, a replica) that served the
key meanwhile makes it fail; the state is then reloaded (from one consistent snapshot) and the
batch observed again. Within a process one lock per key orders a key's batches; other keys
never wait for a key's GEMMs or its Shapiro-Wilk test. States stay in memory up to
`cache_bytes`, the least recently used evicted first.
"""

import threading
from collections import OrderedDict

import numpy as np

from divqat.serve.database import Database
from divqat.serve.prada import PradaConfig, PradaState

SCHEMA = """
CREATE TABLE IF NOT EXISTS prada_state (
    key_id INTEGER PRIMARY KEY REFERENCES keys (id),
    seen INTEGER NOT NULL,
    joins INTEGER NOT NULL DEFAULT 0,
    w {real},
    detected_at INTEGER,
    distances {blob} NOT NULL,
    class_stats {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS prada_members (
    id {id},
    key_id INTEGER NOT NULL REFERENCES keys (id),
    class INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    image {blob} NOT NULL
);
CREATE INDEX IF NOT EXISTS prada_members_by_key ON prada_members (key_id, seq);
"""
RETRIES = 5


class Conflict(Exception):
    """Another process moved the key's state on while this one computed."""


class PradaStore:
    def __init__(self, db: Database, config: PradaConfig, dim: int):
        self.db, self.config, self.dim = db, config, dim
        self.cache: OrderedDict[int, PradaState] = OrderedDict()
        self.cache_lock = threading.Lock()
        self.key_locks: dict[int, threading.Lock] = {}

    # -- reading ---------------------------------------------------------------------------------
    def load(self, key_id: int) -> PradaState:
        """The key's state as stored, from one consistent snapshot of state and members."""
        with self.db.snapshot() as con:
            row = con.execute(
                "SELECT seen, joins, w, detected_at, distances, class_stats FROM prada_state WHERE key_id = ?",
                (key_id,),
            ).fetchone()
            members: dict[int, list] = {}
            rows = con.execute("SELECT class, seq, image FROM prada_members WHERE key_id = ? ORDER BY seq", (key_id,))
            for c, seq, image in rows.fetchall():
                members.setdefault(c, []).append((seq, np.frombuffer(image, "<f4")))
        if row is None:
            return PradaState(self.dim)
        seen, joins, w, detected_at, distances, stats = row
        oldest = min((m[0][0] for m in members.values()), default=joins)
        return PradaState.restore(
            self.dim,
            members,
            np.frombuffer(stats, "<f8").reshape(-1, 5),
            np.frombuffer(distances, "<f4"),
            seen=seen,
            w=w,
            detected_at=detected_at,
            joins=joins,
            oldest=oldest,
        )

    def current(self, key_id: int) -> PradaState:
        """The key's state from memory, as this process last wrote it (or loaded, if it holds none);
        `write` refuses it if another process has moved the key on."""
        with self.cache_lock:
            cached = self.cache.get(key_id)
            if cached is not None:
                self.cache.move_to_end(key_id)
                return cached
        return self.remember(key_id, self.load(key_id))

    def state(self, key_id: int) -> PradaState:
        """The key's state, from memory unless the database has moved on."""
        rows = self.db.read("SELECT seen FROM prada_state WHERE key_id = ?", (key_id,))
        with self.cache_lock:
            cached = self.cache.get(key_id)
            if cached is not None and cached.seen == (rows[0][0] if rows else 0):
                self.cache.move_to_end(key_id)
                return cached
        return self.remember(key_id, self.load(key_id))

    def remember(self, key_id: int, state: PradaState) -> PradaState:
        with self.cache_lock:
            self.cache[key_id] = state
            self.cache.move_to_end(key_id)
            total = sum(s.nbytes for s in self.cache.values())
            while total > self.config.cache_bytes and len(self.cache) > 1:
                _, dropped = self.cache.popitem(last=False)
                total -= dropped.nbytes
        return state

    def forget(self, key_id: int) -> None:
        with self.cache_lock:
            self.cache.pop(key_id, None)

    # -- observing -------------------------------------------------------------------------------
    def lock(self, key_id: int) -> threading.Lock:
        with self.cache_lock:
            return self.key_locks.setdefault(key_id, threading.Lock())

    def observe(self, key_id: int, images: np.ndarray, classes: np.ndarray) -> PradaState:
        """Observe one answered (and already counted) batch of the key, and store the result."""
        with self.lock(key_id):
            for _ in range(RETRIES):
                state = self.current(key_id)  # no read first: the write's own check finds a stale state
                before = state.seen
                try:
                    joined = state.observe(images, classes, self.config)
                    self.write(key_id, state, before, images, joined)
                    return self.remember(key_id, state)  # its new size counts against the cache
                except Conflict:
                    self.forget(key_id)
                except BaseException:
                    self.forget(key_id)  # memory must not run ahead of the database
                    raise
            raise Conflict(f"PRADA state of key {key_id} kept moving under {RETRIES} attempts")

    def write(self, key_id: int, state: PradaState, before: int, images: np.ndarray, joined) -> None:
        values = (
            state.seen,
            state.joins,
            state.w,
            state.detected_at,
            state.distances.astype("<f4").tobytes(),
            state.class_stats().astype("<f8").tobytes(),
        )
        flat = images.reshape(len(images), -1)
        with self.db.transaction() as con:
            if before == 0:  # no row yet (a new key, or one whose state was purged)
                done = con.execute(
                    "INSERT INTO prada_state (seen, joins, w, detected_at, distances, class_stats, key_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id) DO NOTHING RETURNING key_id",
                    (*values, key_id),
                ).fetchone()
            else:
                done = con.execute(
                    "UPDATE prada_state SET seen = ?, joins = ?, w = ?, detected_at = ?, distances = ?, "
                    "class_stats = ? WHERE key_id = ? AND seen = ? RETURNING key_id",
                    (*values, key_id, before),
                ).fetchone()
            if done is None:
                raise Conflict
            con.executemany(
                "INSERT INTO prada_members (key_id, class, seq, image) VALUES (?, ?, ?, ?)",
                [(key_id, c, seq, np.ascontiguousarray(flat[row], "<f4").tobytes()) for c, row, seq in joined],
            )
            con.execute("DELETE FROM prada_members WHERE key_id = ? AND seq < ?", (key_id, state.oldest))

    def summary(self, key_id: int) -> dict:
        rows = self.db.read("SELECT seen, w, detected_at FROM prada_state WHERE key_id = ?", (key_id,))
        seen, w, detected_at = rows[0] if rows else (0, None, None)
        return {"seen": seen, "w": w, "detected_at": detected_at}
