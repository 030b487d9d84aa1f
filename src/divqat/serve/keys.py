"""API keys and their query budgets in SQLite: one row per key, spending that is atomic.

The database holds no usable key, only its SHA-256; a key is shown by `id`, the first 12 hex
digits of that hash. WAL mode lets readers (every request's key lookup) run beside the writer.
A spend is one conditional UPDATE, `used = used + n WHERE used + n <= budget`, so no
interleaving of requests, threads or processes can take a key past its budget; it commits
before the answer is sent, and with synchronous=NORMAL a commit survives the server being
killed (kill -9), though not the machine losing power mid-write (that would need FULL, an
fsync per request).
"""

import hashlib
import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from divqat.errors import DivqatError
from divqat.serve.watermarks import SCHEMA as WATERMARK_SCHEMA
from divqat.wire import OutputMode, parse_output_mode

SCHEMA_VERSION = 2  # 2: the watermark record (serve/watermarks.py); 1 -> 2 adds its table
SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,                -- sha256 hex of the key
    budget INTEGER NOT NULL CHECK (budget >= 0),  -- queries (images) the key may make in all
    used INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    output TEXT NOT NULL,                         -- probabilities, top-k:K or label
    created TEXT NOT NULL,                        -- UTC, ISO 8601
    revoked TEXT,                                 -- when it was revoked, NULL while live
    flagged TEXT                                  -- when extraction detection flagged it, NULL if never
);
"""
KEY_PATTERN = re.compile(r"[A-Za-z0-9._~+/=-]{8,256}")  # RFC 6750 bearer-token characters


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise DivqatError("a key is 8 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -")
    return key


@dataclass(frozen=True)
class KeySpec:
    """A key as an operator declares it (keys file, `divqat keys add`)."""

    key: str
    budget: int
    output: OutputMode


@dataclass(frozen=True)
class KeyRecord:
    """A key's row as the server reads it."""

    rowid: int
    key_hash: str
    budget: int
    used: int
    output: OutputMode
    created: str
    revoked: str | None
    flagged: str | None

    @property
    def id(self) -> str:
        return self.key_hash[:12]

    @property
    def remaining(self) -> int:
        return max(self.budget - self.used, 0)


def record(row) -> KeyRecord:
    rowid, key_hash, budget, used, output, created, revoked, flagged = row
    return KeyRecord(rowid, key_hash, budget, used, parse_output_mode(output), created, revoked, flagged)


COLUMNS = "id, key_hash, budget, used, output, created, revoked, flagged"


def check_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise DivqatError(f"a budget is a non-negative whole number of queries, got {budget!r}")
    return budget


class KeyStore:
    """The key database. One connection per thread (sqlite3 connections are not shared);
    writes in this process take one lock, so threads queue here rather than in SQLite's
    busy-wait; other processes are kept out by SQLite's own write lock."""

    def __init__(self, path: Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise DivqatError(f"no key database at {self.path} (create one with `divqat keys add --db {self.path}`)")
        self.local = threading.local()
        self.write_lock = threading.Lock()
        with self.transaction() as con:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DivqatError(f"{self.path}: made by a newer divqat (schema {version} > {SCHEMA_VERSION})")
            for statement in filter(str.strip, (SCHEMA + WATERMARK_SCHEMA).split(";")):
                con.execute(statement)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def connection(self) -> sqlite3.Connection:
        con = getattr(self.local, "con", None)
        if con is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                con = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
                if con.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                    raise DivqatError(f"{self.path}: SQLite refused WAL mode (a network file system?)")
                con.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError as e:  # not a database, unwritable directory, ...
                raise DivqatError(f"{self.path}: cannot open the key database ({e})") from None
            self.local.con = con
        return con

    @contextmanager
    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT: the write lock is taken at the start, so a transaction
        that reads then writes (PRADA's state) never sees a row another writer is changing."""
        con = self.connection()
        with self.write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # -- reads ---------------------------------------------------------------------------------
    def lookup(self, key: str) -> KeyRecord | None:
        row = self.connection().execute(f"SELECT {COLUMNS} FROM keys WHERE key_hash = ?", (hash_key(key),)).fetchone()
        return record(row) if row else None

    def get(self, rowid: int) -> KeyRecord:
        return record(self.connection().execute(f"SELECT {COLUMNS} FROM keys WHERE id = ?", (rowid,)).fetchone())

    def find(self, key_or_id: str) -> KeyRecord:
        """A key by itself or by its id (or an unambiguous prefix of at least 6 digits of it)."""
        found = self.lookup(key_or_id) if KEY_PATTERN.fullmatch(key_or_id) else None
        if found:
            return found
        if re.fullmatch(r"[0-9a-f]{6,64}", key_or_id):
            rows = (
                self.connection()
                .execute(f"SELECT {COLUMNS} FROM keys WHERE key_hash LIKE ? || '%'", (key_or_id,))
                .fetchall()
            )
            if len(rows) == 1:
                return record(rows[0])
            if len(rows) > 1:
                raise DivqatError(f"{key_or_id!r} matches {len(rows)} keys; give more digits of the id")
        raise DivqatError(f"no key {key_or_id!r} in {self.path}")

    def all(self) -> list[KeyRecord]:
        return [record(r) for r in self.connection().execute(f"SELECT {COLUMNS} FROM keys ORDER BY id").fetchall()]

    # -- writes --------------------------------------------------------------------------------
    def add(self, spec: KeySpec) -> KeyRecord:
        with self.transaction() as con:
            try:
                con.execute(
                    "INSERT INTO keys (key_hash, budget, output, created) VALUES (?, ?, ?, ?)",
                    (hash_key(spec.key), spec.budget, str(spec.output), now()),
                )
            except sqlite3.IntegrityError:
                raise DivqatError(f"key {hash_key(spec.key)[:12]} is already in {self.path}") from None
        return self.lookup(spec.key)

    def declare(self, specs: list[KeySpec]) -> None:
        """A keys file's entries: new keys are added; known ones take the file's budget and output
        mode and keep their count (and stay revoked if they were)."""
        with self.transaction() as con:
            con.executemany(
                "INSERT INTO keys (key_hash, budget, output, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key_hash) DO UPDATE SET budget = excluded.budget, output = excluded.output",
                [(hash_key(s.key), s.budget, str(s.output), now()) for s in specs],
            )

    def revoke(self, key_or_id: str) -> KeyRecord:
        found = self.find(key_or_id)
        with self.transaction() as con:
            con.execute("UPDATE keys SET revoked = COALESCE(revoked, ?) WHERE id = ?", (now(), found.rowid))
        return self.get(found.rowid)

    def spend(self, con: sqlite3.Connection, rowid: int, n: int) -> int | None:
        """Count n queries if the budget allows it, atomically; returns what is left, or None
        (nothing spent) when the batch would pass the budget or the key was revoked meanwhile."""
        row = con.execute(
            "UPDATE keys SET used = used + ? WHERE id = ? AND revoked IS NULL AND used + ? <= budget "
            "RETURNING budget - used",
            (n, rowid, n),
        ).fetchone()
        return None if row is None else row[0]

    def flag(self, con: sqlite3.Connection, rowid: int) -> None:
        con.execute("UPDATE keys SET flagged = COALESCE(flagged, ?) WHERE id = ?", (now(), rowid))


def load_keys_file(path: Path) -> list[KeySpec]:
    """A YAML list of {key: K, budget: N, output: probabilities | top-k:K | label}."""
    try:
        entries = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise DivqatError(f"{path}: no such keys file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DivqatError(f"{path}: unreadable keys file ({str(e).splitlines()[0]})") from None
    if not isinstance(entries, list):
        raise DivqatError(f"{path}: a keys file is a YAML list of {{key, budget, output}} entries")
    specs, seen = [], set()
    for i, entry in enumerate(entries, 1):
        try:
            if not isinstance(entry, dict) or not {"key", "budget"} <= set(entry) <= {"key", "budget", "output"}:
                raise DivqatError("needs key and budget (and optionally output), nothing else")
            spec = KeySpec(
                check_key(entry["key"]),
                check_budget(entry["budget"]),
                parse_output_mode(entry.get("output", "probabilities")),
            )
        except DivqatError as e:
            raise DivqatError(f"{path}: entry {i}: {e}") from None
        if spec.key in seen:
            raise DivqatError(f"{path}: entry {i}: the key appears twice")
        seen.add(spec.key)
        specs.append(spec)
    return specs
