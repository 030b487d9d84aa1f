"""The database's schema, made or brought up to date when a store opens it.

Version 3 (this one) on both engines; SQLite files of versions 1 and 2 are upgraded in place
and lose nothing: their keys keep budget, count, output mode and revocation and get a random
public id (ids were a prefix of the key's SHA-256 before); their SHA-256 hashes stay until
each key's next use, when it is rehashed with the key secret (keys.KeyStore.lookup); PRADA's
members and the watermark records are copied in their order.
"""

import secrets

from divqat.errors import DivqatError
from divqat.serve.database import Connection, Database

SCHEMA_VERSION = 3  # 2: the watermark record; 3: HMAC keys, public ids, origins, ordered members
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id {id},
    public_id TEXT NOT NULL UNIQUE,               -- random, unrelated to the hash: what operator and client see
    key_hash TEXT NOT NULL UNIQUE,                -- HMAC-SHA-256 of the key under the key secret (hex)
    hash_kind TEXT NOT NULL,                      -- hmac-sha256; sha256 for a schema-2 key until its next use
    budget INTEGER NOT NULL CHECK (budget >= 0),  -- queries (images) the key may make in all
    used INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    output TEXT NOT NULL,                         -- probabilities, top-k:K or label
    origin TEXT NOT NULL,                         -- file (a keys file declared it) or command
    created TEXT NOT NULL,                        -- UTC, ISO 8601
    revoked TEXT,                                 -- when it was revoked, NULL while live
    flagged TEXT                                  -- when extraction detection flagged it, NULL if never
);
"""
HMAC_KIND, LEGACY_KIND = "hmac-sha256", "sha256"


def new_public_id() -> str:
    return secrets.token_hex(6)


UPGRADE_SQLITE_2 = [
    "PRAGMA legacy_alter_table = ON",  # renaming keys must not rewrite the other tables' references
    "ALTER TABLE keys RENAME TO keys_v2",
]
COPIED = {  # table -> its columns in version 2; the copy keeps SQLite's rowid as the new ordered id
    "prada_members": "key_id, class, image",
    "watermarks": "key_id, code, image, shape, top1, mark, classes",
}


# Columns added to schema 3 since: (table, column, its type); a database of before gains them.
ADDED = [("watermarks", "own_answer", "{blob}"), ("watermarks", "confidence", "REAL"), ("orders", "per", "TEXT")]


def schema() -> str:
    from divqat.serve.prada_store import SCHEMA as PRADA
    from divqat.serve.watermarks import SCHEMA as WATERMARKS

    return SCHEMA + PRADA + WATERMARKS


def migrate(db: Database) -> None:
    with db.transaction() as con:
        if db.postgres:  # replicas starting together: one makes the tables, the others wait
            con.execute("SELECT pg_advisory_xact_lock(7412)")
        version = current_version(db, con)
        if version > SCHEMA_VERSION:
            raise DivqatError(f"{db}: made by a newer divqat (schema {version} > {SCHEMA_VERSION})")
        old = {}
        if version in (1, 2):
            for statement in UPGRADE_SQLITE_2:
                con.execute(statement)
            keys = con.execute("SELECT id, key_hash, budget, used, output, created, revoked, flagged FROM keys_v2")
            old["keys"] = keys.fetchall()
            for table in COPIED:
                if has_table(db, con, table):
                    con.execute(f"ALTER TABLE {table} RENAME TO {table}_v2")
                    old[table] = True
            con.execute("DROP INDEX IF EXISTS prada_members_by_key")
        for statement in db.ddl(schema()):
            con.execute(statement)
        for table, column, kind in ADDED:  # additive: a schema-3 database of before gains them
            if not has_column(db, con, table, column):
                con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {db.ddl(kind)[0]}")
        if old:
            con.executemany(
                "INSERT INTO keys (id, public_id, key_hash, hash_kind, budget, used, output, origin, created, revoked, "
                "flagged) VALUES (?, ?, ?, ?, ?, ?, ?, 'command', ?, ?, ?)",
                [(rowid, new_public_id(), h, LEGACY_KIND, *rest) for rowid, h, *rest in old["keys"]],
            )
            con.execute("DROP TABLE keys_v2")
            for table, columns in COPIED.items():
                if table in old:
                    con.execute(f"INSERT INTO {table} (id, {columns}) SELECT rowid, {columns} FROM {table}_v2")
                    con.execute(f"DROP TABLE {table}_v2")
            con.execute("PRAGMA legacy_alter_table = OFF")
        con.execute(
            "INSERT INTO meta (name, value) VALUES ('schema', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )


def has_column(db: Database, con: Connection, table: str, column: str) -> bool:
    if db.postgres:
        query = "SELECT 1 FROM information_schema.columns WHERE table_name = ? AND column_name = ?"
        return con.execute(query, (table, column)).fetchone() is not None
    return any(row[1] == column for row in con.execute(f"PRAGMA table_info({table})"))


def has_table(db: Database, con: Connection, name: str) -> bool:
    if db.postgres:
        return con.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def current_version(db: Database, con: Connection) -> int:
    if has_table(db, con, "meta"):
        row = con.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        return int(row[0]) if row else 0
    if db.postgres:
        return 0
    return con.execute("PRAGMA user_version").fetchone()[0]  # versions 1 and 2 kept it there
