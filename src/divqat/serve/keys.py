"""API keys and their query budgets: one row per key, spending that is atomic.

The store (SQLite or PostgreSQL, serve/database.py) holds no usable key: only HMAC-SHA-256 of
it under the server's key secret, a file of 32 random bytes kept apart from the database
(`--key-secret`; for SQLite the default is `DB.secret`, made 0600 on first use). A leaked
database alone lets nobody test guesses offline. A key is shown by a random public id that
says nothing of its hash. New keys are at least 32 characters (generated ones 43, 256 random
bits), so guessing one online is hopeless too.

A spend is one conditional UPDATE, `used = used + n WHERE used + n <= budget`, so no
interleaving of requests, threads, processes or replicas can take a key past its budget; it
commits before the answer is sent. SQLite runs in WAL mode with synchronous=NORMAL: a commit
survives the server being killed (kill -9), though not the machine losing power mid-write.
"""

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from divqat.errors import DivqatError
from divqat.serve.database import Connection, Database
from divqat.serve.migrations import HMAC_KIND, LEGACY_KIND, migrate, new_public_id
from divqat.wire import OutputMode, parse_output_mode

PUBLIC_ID_PATTERN = re.compile(r"[0-9a-f]{6,12}")  # a key's public id (12 hex digits) or a prefix of it
KEY_PATTERN = re.compile(r"[A-Za-z0-9._~+/=-]{8,256}")  # RFC 6750 bearer-token characters (schema-2 keys: 8+)
MIN_KEY_LENGTH = 32


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key) or len(key) < MIN_KEY_LENGTH:
        raise DivqatError(
            f"a key is {MIN_KEY_LENGTH} to 256 characters of A-Z a-z 0-9 . _ ~ + / = - "
            "(leave it out and `divqat keys add` makes one)"
        )
    return key


def new_key() -> str:
    return secrets.token_urlsafe(32)


def read_key_secret(path: Path, create: bool) -> bytes:
    """The key secret's bytes; made (32 random bytes, 0600) when absent and `create`."""
    path = Path(path)
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        raise DivqatError(f"no key secret at {path}: the keys of this database cannot be checked without it") from None
    except OSError as e:
        raise DivqatError(f"{path}: cannot read the key secret ({e.strerror})") from None
    if len(secret) < 16:
        raise DivqatError(f"{path}: a key secret is at least 16 bytes, this file has {len(secret)}")
    return secret


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
    id: str  # the public id
    budget: int
    used: int
    output: OutputMode
    origin: str
    created: str
    revoked: str | None
    flagged: str | None

    @property
    def remaining(self) -> int:
        return max(self.budget - self.used, 0)


COLUMNS = "id, public_id, budget, used, output, origin, created, revoked, flagged"


def record(row) -> KeyRecord:
    rowid, public_id, budget, used, output, origin, created, revoked, flagged = row
    return KeyRecord(rowid, public_id, budget, used, parse_output_mode(output), origin, created, revoked, flagged)


def check_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise DivqatError(f"a budget is a non-negative whole number of queries, got {budget!r}")
    return budget


def default_secret_file(target) -> Path | None:
    return None if Database(target).postgres else Path(f"{target}.secret")


class KeyStore:
    """The key store and the schema of the whole database (keys, PRADA, watermark records)."""

    def __init__(self, target, create: bool = True, secret_file: Path | None = None):
        self.db = Database(target)
        self.path = self.db.target
        if not create and not self.db.exists():
            raise DivqatError(f"no key database at {self.db} (create one with `divqat keys add --db {self.db}`)")
        self.secret_file = secret_file or default_secret_file(target)
        self._secret = None
        if (
            self.secret_file is not None and Path(self.secret_file).exists()
        ):  # a bad secret: refused before any file is made
            self._secret = read_key_secret(self.secret_file, create=False)
        migrate(self.db)
        if create:
            self.secret  # noqa: B018  (made with the database; otherwise read when first needed)

    @property
    def secret(self) -> bytes:
        """The key secret, made only while no key depends on one (a new or a schema-2 database)."""
        if self._secret is None:
            if self.secret_file is None:
                raise DivqatError("a PostgreSQL --db needs --key-secret FILE (the same file on every replica)")
            hashed = self.db.read("SELECT COUNT(*) FROM keys WHERE hash_kind = ?", (HMAC_KIND,))[0][0]
            self._secret = read_key_secret(self.secret_file, create=hashed == 0)
        return self._secret

    def hash(self, key: str) -> str:
        return hmac.new(self.secret, key.encode(), hashlib.sha256).hexdigest()

    def transaction(self):
        return self.db.transaction()

    def connection(self) -> Connection:
        return self.db.connection()

    # -- reads ---------------------------------------------------------------------------------
    def lookup(self, key: str) -> KeyRecord | None:
        rows = self.db.read(f"SELECT {COLUMNS} FROM keys WHERE key_hash = ?", (self.hash(key),))
        if rows:
            return record(rows[0])
        legacy = hashlib.sha256(key.encode()).hexdigest()  # a key made before schema 3
        rows = self.db.read("SELECT id FROM keys WHERE key_hash = ? AND hash_kind = ?", (legacy, LEGACY_KIND))
        if not rows:
            return None
        with self.transaction() as con:  # rehashed at its first use: the plain hash leaves the database
            con.execute(
                "UPDATE keys SET key_hash = ?, hash_kind = ? WHERE id = ?", (self.hash(key), HMAC_KIND, rows[0][0])
            )
        return self.get(rows[0][0])

    def get(self, rowid: int) -> KeyRecord:
        return record(self.db.read(f"SELECT {COLUMNS} FROM keys WHERE id = ?", (rowid,))[0])

    def find(self, key_or_id: str) -> KeyRecord:
        """A key by itself or by its public id (or an unambiguous prefix of at least 6 digits of it).
        Without the key secret at hand a public id is tried first, since it needs none (`divqat
        verify --db COPY --key ID` on a copy of the database; PostgreSQL, whose secret stays with
        the servers); a key itself comes next, as before."""
        secret_at_hand = self._secret is not None or (self.secret_file and Path(self.secret_file).exists())
        if not secret_at_hand and (found := self.by_public_id(key_or_id)):
            return found
        found = self.lookup(key_or_id) if KEY_PATTERN.fullmatch(key_or_id) else None
        if not found and secret_at_hand:  # without it, the id was tried above
            found = self.by_public_id(key_or_id)
        if found:
            return found
        raise DivqatError(f"no key {key_or_id!r} in {self.db}")

    def by_public_id(self, prefix: str) -> KeyRecord | None:
        """The key whose public id starts with `prefix` (6-12 hex digits), if exactly one does."""
        if not PUBLIC_ID_PATTERN.fullmatch(prefix):
            return None
        rows = self.db.read(f"SELECT {COLUMNS} FROM keys WHERE public_id LIKE ?", (prefix + "%",))
        if len(rows) > 1:
            raise DivqatError(f"{prefix!r} matches {len(rows)} keys; give more digits of the id")
        return record(rows[0]) if rows else None

    def all(self) -> list[KeyRecord]:
        return [record(r) for r in self.db.read(f"SELECT {COLUMNS} FROM keys ORDER BY id")]

    # -- writes --------------------------------------------------------------------------------
    def insert(self, con: Connection, spec: KeySpec, origin: str) -> None:
        con.execute(
            "INSERT INTO keys (public_id, key_hash, hash_kind, budget, output, origin, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (new_public_id(), self.hash(spec.key), HMAC_KIND, spec.budget, str(spec.output), origin, now()),
        )

    def add(self, spec: KeySpec) -> KeyRecord:
        if self.lookup(spec.key) is not None:
            raise DivqatError(f"key {self.lookup(spec.key).id} is already in {self.db}")
        with self.transaction() as con:
            self.insert(con, spec, "command")
        return self.lookup(spec.key)

    def declare(self, specs: list[KeySpec]) -> list[KeyRecord]:
        """A keys file's entries: new keys are added; known ones take the file's budget and output
        mode and keep their count (and stay revoked if they were); keys an earlier keys file
        declared that this one no longer lists are revoked. Returns the keys revoked."""
        hashes = {self.hash(s.key) for s in specs}
        for s in specs:
            self.lookup(s.key)  # rehashes a schema-2 key, so the update below finds it
        with self.transaction() as con:
            for s in specs:
                updated = con.execute(
                    "UPDATE keys SET budget = ?, output = ?, origin = 'file' WHERE key_hash = ? RETURNING id",
                    (s.budget, str(s.output), self.hash(s.key)),
                ).fetchone()
                if updated is None:
                    self.insert(con, s, "file")
            live = con.execute("SELECT id, key_hash FROM keys WHERE origin = 'file' AND revoked IS NULL").fetchall()
            dropped = [rowid for rowid, key_hash in live if key_hash not in hashes]
            for rowid in dropped:
                self.revoke_row(con, rowid)
        return [self.get(rowid) for rowid in dropped]

    def revoke(self, key_or_id: str) -> KeyRecord:
        found = self.find(key_or_id)
        with self.transaction() as con:
            self.revoke_row(con, found.rowid)
        return self.get(found.rowid)

    def revoke_row(self, con: Connection, rowid: int) -> None:
        """Revoked for good; its PRADA state is purged (its watermark record is evidence: kept)."""
        con.execute("UPDATE keys SET revoked = COALESCE(revoked, ?) WHERE id = ?", (now(), rowid))
        con.execute("DELETE FROM prada_members WHERE key_id = ?", (rowid,))
        con.execute("DELETE FROM prada_state WHERE key_id = ?", (rowid,))

    def update(self, key_or_id: str, budget: int | None = None, output=None, clear_flag: bool = False) -> KeyRecord:
        """An operator's change to a live key: budget, output mode, or PRADA's flag cleared
        (which also restarts its PRADA state, so that it is not flagged again at once)."""
        found = self.find(key_or_id)
        with self.transaction() as con:
            if budget is not None:
                con.execute("UPDATE keys SET budget = ? WHERE id = ?", (check_budget(budget), found.rowid))
            if output is not None:
                con.execute("UPDATE keys SET output = ? WHERE id = ?", (str(parse_output_mode(output)), found.rowid))
            if clear_flag:
                con.execute("UPDATE keys SET flagged = NULL WHERE id = ?", (found.rowid,))
                con.execute("DELETE FROM prada_members WHERE key_id = ?", (found.rowid,))
                con.execute("DELETE FROM prada_state WHERE key_id = ?", (found.rowid,))
        return self.get(found.rowid)

    def spend(self, con: Connection, rowid: int, n: int) -> int | None:
        """Count n queries if the budget allows it, atomically; returns what is left, or None
        (nothing spent) when the batch would pass the budget or the key was revoked meanwhile."""
        row = con.execute(
            "UPDATE keys SET used = used + ? WHERE id = ? AND revoked IS NULL AND used + ? <= budget "
            "RETURNING budget - used",
            (n, rowid, n),
        ).fetchone()
        return None if row is None else row[0]

    def flag(self, con: Connection, rowid: int) -> None:
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
