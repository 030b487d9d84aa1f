"""PRADA's per-key state in the key database, so detection survives restarts.

    prada_state    one row per key: queries seen, W, when detected, D (float32 blob, at most
                   `window` values) and per-class growing-set statistics (float64 blob)
    prada_members  one row per growing-set member (class, float32 pixels): appended when a
                   query joins a set, never rewritten, at most K * max_members rows per key

A request's update is a few small writes (its new members, one state row), not a rewrite of
the key's history. The server keeps each key's state in memory and checks, inside the same
write transaction as the spend, that the stored count of queries seen is the one it holds:
if another process has served the key meanwhile, it reloads the state from the database.
"""

import sqlite3

import numpy as np

from divqat.serve.prada import PradaConfig, PradaState

SCHEMA = """
CREATE TABLE IF NOT EXISTS prada_state (
    key_id INTEGER PRIMARY KEY REFERENCES keys (id),
    seen INTEGER NOT NULL,
    w REAL,
    detected_at INTEGER,
    distances BLOB NOT NULL,
    class_stats BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS prada_members (
    key_id INTEGER NOT NULL REFERENCES keys (id),
    class INTEGER NOT NULL,
    image BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS prada_members_by_key ON prada_members (key_id, class);
"""


class PradaStore:
    def __init__(self, con: sqlite3.Connection, config: PradaConfig, dim: int):
        for statement in filter(str.strip, SCHEMA.split(";")):
            con.execute(statement)
        self.config, self.dim = config, dim
        self.cache: dict[int, PradaState] = {}

    def load(self, con: sqlite3.Connection, key_id: int) -> PradaState:
        row = con.execute(
            "SELECT seen, w, detected_at, distances, class_stats FROM prada_state WHERE key_id = ?", (key_id,)
        ).fetchone()
        if row is None:
            return PradaState(self.dim)
        seen, w, detected_at, distances, stats = row
        members: dict[int, list[np.ndarray]] = {}
        for c, image in con.execute(
            "SELECT class, image FROM prada_members WHERE key_id = ? ORDER BY rowid", (key_id,)
        ).fetchall():
            members.setdefault(c, []).append(np.frombuffer(image, "<f4"))
        return PradaState.restore(
            self.dim,
            members,
            np.frombuffer(stats, "<f8").reshape(-1, 5),
            np.frombuffer(distances, "<f4"),
            seen=seen,
            w=w,
            detected_at=detected_at,
        )

    def state(self, con: sqlite3.Connection, key_id: int) -> PradaState:
        """The key's state, from memory unless the database has moved on (call inside a transaction)."""
        row = con.execute("SELECT seen FROM prada_state WHERE key_id = ?", (key_id,)).fetchone()
        cached = self.cache.get(key_id)
        if cached is None or cached.seen != (row[0] if row else 0):
            cached = self.cache[key_id] = self.load(con, key_id)
        return cached

    def observe(self, con: sqlite3.Connection, key_id: int, images: np.ndarray, classes: np.ndarray) -> PradaState:
        """Update and store the key's state for one answered batch (call inside the spend's transaction)."""
        state = self.state(con, key_id)
        try:
            joined = state.observe(images, classes, self.config)
            flat = images.reshape(len(images), -1)
            con.executemany(
                "INSERT INTO prada_members (key_id, class, image) VALUES (?, ?, ?)",
                [(key_id, c, np.ascontiguousarray(flat[row], "<f4").tobytes()) for c, row in joined],
            )
            con.execute(
                "INSERT INTO prada_state (key_id, seen, w, detected_at, distances, class_stats) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET seen = excluded.seen, "
                "w = excluded.w, detected_at = excluded.detected_at, distances = excluded.distances, "
                "class_stats = excluded.class_stats",
                (
                    key_id,
                    state.seen,
                    state.w,
                    state.detected_at,
                    state.distances.astype("<f4").tobytes(),
                    state.class_stats().astype("<f8").tobytes(),
                ),
            )
        except BaseException:
            self.cache.pop(key_id, None)  # the transaction rolls back: memory must not run ahead of it
            raise
        return state

    def summary(self, con: sqlite3.Connection, key_id: int) -> dict:
        row = con.execute("SELECT seen, w, detected_at FROM prada_state WHERE key_id = ?", (key_id,)).fetchone()
        seen, w, detected_at = row or (0, None, None)
        return {"seen": seen, "w": w, "detected_at": detected_at}
