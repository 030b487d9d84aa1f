"""The key database: keys files, the `divqat keys` commands, and spending that never passes a budget."""

import hashlib
import sqlite3
import stat
import subprocess
import sys
import threading

import pytest
from serving import spec

from divqat.cli import main
from divqat.errors import DivqatError
from divqat.serve.keys import KeyStore, check_key, load_keys_file, new_key


def spend(store: KeyStore, rowid: int, n: int) -> bool:
    with store.transaction() as con:
        return store.spend(con, rowid, n) is not None


def test_database_holds_keyed_hashes_not_keys_and_is_private(tmp_path):
    """Before: the unsalted SHA-256 of the key, and the public id its first 12 hex digits (so a
    leaked database let anyone test guesses offline), in a world-readable file."""
    store = KeyStore(tmp_path / "k.db")
    key = "alice-key-0001-0123456789abcdef012"
    added = store.add(spec(key, 10, "top-k:3"))
    assert added.remaining == 10 and str(added.output) == "top-k:3"
    raw = (tmp_path / "k.db").read_bytes() + (tmp_path / "k.db-wal").read_bytes()
    plain = hashlib.sha256(key.encode()).hexdigest()
    assert key.encode() not in raw and plain.encode() not in raw and plain[:12] != added.id
    assert added.id not in store.hash(key)  # the id is random, not a piece of the hash
    for name in ("k.db", "k.db-wal", "k.db.secret"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert sqlite3.connect(tmp_path / "k.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(DivqatError, match="already in"):
        store.add(spec(key, 5))
    other = KeyStore(tmp_path / "other.db")  # another database, another secret: another hash
    assert other.hash(key) != store.hash(key)


def test_a_key_must_be_long_enough_to_be_unguessable(tmp_path):
    with pytest.raises(DivqatError, match="32 to 256 characters"):
        check_key("alice-key-0001")
    assert len(new_key()) >= 43 and new_key() != new_key()


def test_a_schema_2_database_is_upgraded_without_losing_a_key(tmp_path):
    """A database of the previous release: SHA-256 hashes, ids from them; its keys keep budget,
    count and revocation, get random ids, and are rehashed with the secret at their next use."""
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(SCHEMA_2)
    old = "bob-key-00001"  # schema 2 allowed 8 characters
    con.execute(
        "INSERT INTO keys (key_hash, budget, used, output, created) VALUES (?, 10, 4, 'label', 'then')",
        (hashlib.sha256(old.encode()).hexdigest(),),
    )
    con.execute("INSERT INTO watermarks VALUES (1, 'c', x'00000000', '1,1,1', 3, 4, 10)")
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    store = KeyStore(db)
    found = store.lookup(old)
    assert (found.budget, found.used, str(found.output)) == (10, 4, "label")
    assert store.db.read("SELECT hash_kind, key_hash FROM keys")[0] == ("hmac-sha256", store.hash(old))
    assert store.db.read("SELECT code, top1, mark FROM watermarks") == [("c", 3, 4)]
    assert KeyStore(db).lookup(old).id == found.id  # reopened: nothing changes twice


def reopened_without(tmp_path, column: str, own: list[float] | None = None):
    """A schema-3 database of before `column` was added, holding one watermark row (with the
    model's own answer `own`, if given), opened again: (its columns now, the row's record)."""
    import numpy as np

    from divqat.serve import watermarks

    db = tmp_path / "k.db"
    rowid = KeyStore(db).add(spec("alice-key-0001-0123456789abcdef012", 10)).rowid
    con = sqlite3.connect(db)
    con.execute(f"ALTER TABLE watermarks DROP COLUMN {column}")
    con.execute("INSERT INTO watermarks (key_id, code, image, shape, top1, mark, classes) "
                "VALUES (?, 'c', x'0000803f', '1,1,1', 1, 2, 3)", (rowid,))  # fmt: skip
    if own is not None:
        con.execute("UPDATE watermarks SET own_answer = ?", (np.array(own, "<f4").tobytes(),))
    con.commit()
    con.close()
    store = KeyStore(db)
    columns = [row[1] for row in store.db.read("PRAGMA table_info(watermarks)")]
    return columns, watermarks.load(store.connection(), rowid)


def test_a_schema_3_database_of_before_gains_the_own_answers_column(tmp_path):
    """Records of before the model's own answers were kept load without them (the test goes without)."""
    columns, record = reopened_without(tmp_path, "own_answer")
    assert (record.codes, record.top1, record.mark, record.natural, record.confidence) == (["c"], [1], [2], [], [])
    assert "own_answer" in columns


def test_rows_of_before_the_served_confidence_was_kept_load_with_the_own_answers_top(tmp_path):
    """Rows of before marks could be lifted were served with the model's own top probability."""
    columns, record = reopened_without(tmp_path, "confidence", own=[0.1, 0.7, 0.2])
    assert record.confidence == [pytest.approx(0.7)] and record.tensors()["confidence"].shape == (1,)
    assert "confidence" in columns


SCHEMA_2 = """
CREATE TABLE keys (id INTEGER PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, budget INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0, output TEXT NOT NULL, created TEXT NOT NULL, revoked TEXT, flagged TEXT);
CREATE TABLE watermarks (key_id INTEGER NOT NULL, code TEXT NOT NULL, image BLOB NOT NULL, shape TEXT NOT NULL,
    top1 INTEGER NOT NULL, mark INTEGER NOT NULL, classes INTEGER NOT NULL, PRIMARY KEY (key_id, code));
"""


def test_a_batch_past_the_budget_is_refused_whole(store_target, tmp_path):
    store = KeyStore(store_target, secret_file=tmp_path / "secret")
    key = store.add(spec("alice-key-0001-0123456789abcdef012", 10))
    assert spend(store, key.rowid, 7)
    assert not spend(store, key.rowid, 4)  # 3 left: refused whole, nothing spent
    assert store.get(key.rowid).used == 7
    assert spend(store, key.rowid, 3) and store.get(key.rowid).remaining == 0


def test_threads_never_spend_past_the_budget(store_target, tmp_path):
    store = KeyStore(store_target, secret_file=tmp_path / "secret")
    key = store.add(spec("alice-key-0001-0123456789abcdef012", 100))
    granted = []

    def worker():
        for _ in range(20):
            if spend(store, key.rowid, 3):
                granted.append(3)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == store.get(key.rowid).used == 99  # 33 batches of 3 fit in 100; the 34th never


# A spend the database refused as busy (locked past its timeout: on a loaded machine) is asked
# again, as a client asks again after the server's 503; it must never be counted twice.
SPENDER = """
import sys
from divqat.serve.database import Busy
from divqat.serve.keys import KeyStore
store = KeyStore(sys.argv[1], secret_file=sys.argv[2])
rowid, granted, done = store.lookup("shared-key-01-0123456789abcdef012").rowid, 0, 0
while done < 60:
    try:
        with store.transaction() as con:
            spent = store.spend(con, rowid, 1) is not None
    except Busy:
        continue
    granted, done = granted + spent, done + 1
print(granted)
"""


def test_processes_never_spend_past_the_budget(store_target, tmp_path):
    db, secret = store_target, str(tmp_path / "secret")
    KeyStore(db, secret_file=secret).add(spec("shared-key-01-0123456789abcdef012", 150))
    argv = [sys.executable, "-c", SPENDER, db, secret]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    granted = [int(p.communicate(timeout=180)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(granted) == KeyStore(db, secret_file=secret).lookup("shared-key-01-0123456789abcdef012").used == 150


def test_keys_file(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(
        "- {key: alice-key-0001-0123456789abcdef012, budget: 100}\n"
        "- {key: bob-key-00002-0123456789abcdef012, budget: 5, output: label}\n"
    )
    specs = load_keys_file(path)
    assert [(s.key, s.budget, str(s.output)) for s in specs] == [
        ("alice-key-0001-0123456789abcdef012", 100, "probabilities"),
        ("bob-key-00002-0123456789abcdef012", 5, "label"),
    ]
    store = KeyStore(tmp_path / "k.db")
    store.declare(specs)
    alice = store.lookup("alice-key-0001-0123456789abcdef012")
    assert spend(store, alice.rowid, 40)
    store.revoke("alice-key-0001-0123456789abcdef012")
    path.write_text("- {key: alice-key-0001-0123456789abcdef012, budget: 200, output: 'top-k:2'}\n")
    store.declare(load_keys_file(path))  # a restart with an edited file: new budget, count and revocation kept
    alice = store.lookup("alice-key-0001-0123456789abcdef012")
    assert (alice.budget, alice.used, str(alice.output), alice.revoked is not None) == (200, 40, "top-k:2", True)


@pytest.mark.parametrize(
    "text,match",
    [
        ("key: x", "YAML list"),
        ("- {key: short, budget: 1}", "entry 1: a key is 32 to 256"),
        ("- {key: alice-key-0001-0123456789abcdef012, budget: -1}", "entry 1: a budget is"),
        ("- {key: alice-key-0001-0123456789abcdef012, budget: 1.5}", "entry 1: a budget is"),
        ("- {key: alice-key-0001-0123456789abcdef012, budget: 1, output: top-3}", "entry 1: unknown output mode"),
        ("- {key: alice-key-0001-0123456789abcdef012, budget: 1, extra: 2}", "entry 1: needs key and budget"),
        (
            "- {key: alice-key-0001-0123456789abcdef012, budget: 1}\n"
            "- {key: alice-key-0001-0123456789abcdef012, budget: 2}",
            "entry 2: the key appears twice",
        ),
        ("- [unclosed", "unreadable keys file"),
        ("- !!python/object:os.system {}", "unreadable keys file"),  # safe_load: nothing is constructed
    ],
)
def test_bad_keys_files(tmp_path, text, match):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(DivqatError, match=match):
        load_keys_file(path)


def test_keys_commands(tmp_path, capsys):
    db = str(tmp_path / "k.db")
    assert main(["keys", "add", "--db", db, "--budget", "50", "--output", "label"]) == 0
    made = capsys.readouterr().out.strip().splitlines()[0]  # a generated key is printed alone on stdout
    store = KeyStore(tmp_path / "k.db")
    assert store.lookup(made).budget == 50
    alice = "alice-key-0001-0123456789abcdef012"
    assert main(["keys", "add", "--db", db, "--budget", "9", "--key", alice]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--db", db]) == 0
    listing = capsys.readouterr().err  # the project's console is stderr
    alice_id = store.lookup(alice).id
    assert store.lookup(made).id in listing and alice_id in listing and made not in listing
    assert main(["keys", "set", "--db", db, alice_id, "--budget", "20", "--output", "top-k:2"]) == 0
    assert (store.lookup(alice).budget, str(store.lookup(alice).output)) == (20, "top-k:2")
    assert main(["keys", "revoke", "--db", db, alice_id[:8]]) == 0  # by a prefix of its id
    assert store.lookup(alice).revoked is not None


def test_a_public_id_is_found_without_the_key_secret_and_a_key_is_not(tmp_path):
    made = KeyStore(tmp_path / "k.db", secret_file=tmp_path / "elsewhere.secret")
    alice = made.add(spec("alice-key-0001-0123456789abcdef012", 10))
    copy = KeyStore(tmp_path / "k.db", create=False)  # the database without its secret
    assert copy.find(alice.id).rowid == copy.find(alice.id[:6]).rowid == alice.rowid
    with pytest.raises(DivqatError, match="no key secret"):
        copy.find("alice-key-0001-0123456789abcdef012")


def test_a_schema_2_key_of_hex_digits_is_still_found_by_itself_without_a_secret(tmp_path):
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(SCHEMA_2)
    con.execute("INSERT INTO keys (key_hash, budget, used, output, created) VALUES (?, 10, 0, 'label', 'then')",
                (hashlib.sha256(b"deadbeef00").hexdigest(),))  # fmt: skip
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    assert KeyStore(db, create=False).find("deadbeef00").budget == 10  # no public id matched: the key itself


def test_clearing_a_flag_restarts_prada_and_keeps_the_count(tmp_path):
    store = KeyStore(tmp_path / "k.db")
    key = store.add(spec("alice-key-0001-0123456789abcdef012", 10))
    assert spend(store, key.rowid, 4)
    with store.transaction() as con:
        store.flag(con, key.rowid)
        con.execute(
            "INSERT INTO prada_state (key_id, seen, distances, class_stats) VALUES (?, 4, x'', x'')", (key.rowid,)
        )
    assert main(["keys", "set", "--db", str(tmp_path / "k.db"), key.id, "--clear-flag"]) == 0
    after = store.get(key.rowid)
    assert after.flagged is None and after.used == 4
    assert store.db.read("SELECT COUNT(*) FROM prada_state")[0][0] == 0


def test_a_key_the_keys_file_dropped_is_revoked(tmp_path, capsys):
    """Before: removing a key from the keys file and restarting left it answering 200."""
    path, db = tmp_path / "keys.yaml", str(tmp_path / "k.db")
    alice, bob = "alice-key-0001-0123456789abcdef012", "bob-key-00001-0123456789abcdef012"
    path.write_text(f"- {{key: {alice}, budget: 10}}\n- {{key: {bob}, budget: 10}}\n")
    assert main(["keys", "import", "--db", db, str(path)]) == 0
    assert main(["keys", "add", "--db", db, "--budget", "3"]) == 0  # a key of the command: no file drops it
    made = capsys.readouterr().out.strip()
    path.write_text(f"- {{key: {alice}, budget: 10}}\n")
    assert main(["keys", "import", "--db", db, str(path)]) == 0
    store = KeyStore(db)
    assert store.lookup(bob).revoked is not None and "revoked" in capsys.readouterr().err
    assert store.lookup(alice).revoked is None and store.lookup(made).revoked is None
    path.write_text(f"- {{key: {alice}, budget: 10}}\n- {{key: {bob}, budget: 10}}\n")
    store.declare(load_keys_file(path))
    assert store.lookup(bob).revoked is not None  # back in the file, but a revocation is for good


@pytest.mark.parametrize(
    "args,match",
    [
        (["keys", "add", "--budget", "-3"], "a budget is"),
        (["keys", "add", "--budget", "3", "--key", "no spaces here"], "a key is 32 to 256"),
        (["keys", "add", "--budget", "3", "--key", "short-key-0001"], "a key is 32 to 256"),
        (["keys", "set", "nobody-key-01-0123456789abcdef012"], "nothing to change"),
        (["keys", "add", "--budget", "3", "--output", "top-k:0"], "unknown output mode"),
        (["keys", "revoke", "nobody-key-1"], "no key 'nobody-key-1'"),
    ],
)
def test_keys_command_errors_are_one_line(tmp_path, capsys, args, match):
    KeyStore(tmp_path / "k.db")
    assert main([*args, "--db", str(tmp_path / "k.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("divqat: error:") and match in err and "\n" not in err


def test_list_does_not_create_a_database(tmp_path, capsys):
    assert main(["keys", "list", "--db", str(tmp_path / "none.db")]) == 2
    assert "no key database" in capsys.readouterr().err and not (tmp_path / "none.db").exists()


def test_a_file_that_is_not_a_database(tmp_path):
    (tmp_path / "k.db").write_text("hello, not sqlite" * 100)
    with pytest.raises(DivqatError, match="cannot open the key database"):
        KeyStore(tmp_path / "k.db")


def test_orders_of_before_their_kind_was_kept_load_as_per_image(tmp_path):
    """A schema-3 database gains the orders' `per` column; its rows of before were drawn per
    image. A key told orders of both kinds (a restart with the other `per`) loads the last kind."""
    import numpy as np

    from divqat.serve import watermarks

    db = tmp_path / "k.db"
    rowid = KeyStore(db).add(spec("alice-key-0001-0123456789abcdef012", 10)).rowid
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE orders DROP COLUMN per")
    blob = np.array([0.2, 0.5, 0.3], "<f4").tobytes()
    con.execute("INSERT INTO orders (key_id, code, image, shape, own_answer, served) "
                "VALUES (?, 'c', x'0000803f', '1,1,1', ?, ?)", (rowid, blob, blob))  # fmt: skip
    con.commit()
    con.close()
    store = KeyStore(db)
    assert "per" in [row[1] for row in store.db.read("PRAGMA table_info(orders)")]
    record = watermarks.load(store.connection(), rowid)
    assert (record.orders.codes, record.orders.per) == (["c"], "image")
    with store.transaction() as con:
        con.execute("INSERT INTO orders (key_id, code, image, shape, own_answer, served, per) "
                    "VALUES (?, 'd', x'0000803f', '1,1,1', ?, ?, 'class')", (rowid, blob, blob))  # fmt: skip
    record = watermarks.load(store.connection(), rowid)
    assert (record.orders.codes, record.orders.per) == (["d"], "class")
