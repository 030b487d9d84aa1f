"""The key database: keys files, the `divqat keys` commands, and spending that never passes a budget."""

import sqlite3
import subprocess
import sys
import threading

import pytest
from serving import spec

from divqat.cli import main
from divqat.errors import DivqatError
from divqat.serve.keys import KeyStore, hash_key, load_keys_file


def spend(store: KeyStore, rowid: int, n: int) -> bool:
    with store.transaction() as con:
        return store.spend(con, rowid, n) is not None


def test_database_holds_hashes_not_keys_and_uses_wal(tmp_path):
    store = KeyStore(tmp_path / "k.db")
    added = store.add(spec("alice-key-0001", 10, "top-k:3"))
    assert added.id == hash_key("alice-key-0001")[:12] and added.remaining == 10 and str(added.output) == "top-k:3"
    raw = (tmp_path / "k.db").read_bytes() + (tmp_path / "k.db-wal").read_bytes()
    assert b"alice-key-0001" not in raw
    assert sqlite3.connect(tmp_path / "k.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(DivqatError, match="already in"):
        store.add(spec("alice-key-0001", 5))


def test_a_batch_past_the_budget_is_refused_whole(tmp_path):
    store = KeyStore(tmp_path / "k.db")
    key = store.add(spec("alice-key-0001", 10))
    assert spend(store, key.rowid, 7)
    assert not spend(store, key.rowid, 4)  # 3 left: refused whole, nothing spent
    assert store.get(key.rowid).used == 7
    assert spend(store, key.rowid, 3) and store.get(key.rowid).remaining == 0


def test_threads_never_spend_past_the_budget(tmp_path):
    store = KeyStore(tmp_path / "k.db")
    key = store.add(spec("alice-key-0001", 100))
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


SPENDER = """
import sys
from divqat.serve.keys import KeyStore
store = KeyStore(sys.argv[1])
rowid, granted = store.lookup("shared-key-01").rowid, 0
for _ in range(60):
    with store.transaction() as con:
        granted += store.spend(con, rowid, 1) is not None
print(granted)
"""


def test_processes_never_spend_past_the_budget(tmp_path):
    db = tmp_path / "k.db"
    KeyStore(db).add(spec("shared-key-01", 150))
    procs = [
        subprocess.Popen([sys.executable, "-c", SPENDER, str(db)], stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    granted = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(granted) == KeyStore(db).lookup("shared-key-01").used == 150  # 240 asked for


def test_keys_file(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("- {key: alice-key-0001, budget: 100}\n- {key: bob-key-00002, budget: 5, output: label}\n")
    specs = load_keys_file(path)
    assert [(s.key, s.budget, str(s.output)) for s in specs] == [
        ("alice-key-0001", 100, "probabilities"),
        ("bob-key-00002", 5, "label"),
    ]
    store = KeyStore(tmp_path / "k.db")
    store.declare(specs)
    alice = store.lookup("alice-key-0001")
    assert spend(store, alice.rowid, 40)
    store.revoke("alice-key-0001")
    path.write_text("- {key: alice-key-0001, budget: 200, output: 'top-k:2'}\n")
    store.declare(load_keys_file(path))  # a restart with an edited file: new budget, count and revocation kept
    alice = store.lookup("alice-key-0001")
    assert (alice.budget, alice.used, str(alice.output), alice.revoked is not None) == (200, 40, "top-k:2", True)


@pytest.mark.parametrize(
    "text,match",
    [
        ("key: x", "YAML list"),
        ("- {key: short, budget: 1}", "entry 1: a key is 8 to 256"),
        ("- {key: alice-key-0001, budget: -1}", "entry 1: a budget is"),
        ("- {key: alice-key-0001, budget: 1.5}", "entry 1: a budget is"),
        ("- {key: alice-key-0001, budget: 1, output: top-3}", "entry 1: unknown output mode"),
        ("- {key: alice-key-0001, budget: 1, extra: 2}", "entry 1: needs key and budget"),
        ("- {key: alice-key-0001, budget: 1}\n- {key: alice-key-0001, budget: 2}", "entry 2: the key appears twice"),
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
    assert KeyStore(tmp_path / "k.db").lookup(made).budget == 50
    assert main(["keys", "add", "--db", db, "--budget", "9", "--key", "alice-key-0001"]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--db", db]) == 0
    listing = capsys.readouterr().err  # the project's console is stderr
    assert hash_key(made)[:12] in listing and hash_key("alice-key-0001")[:12] in listing and made not in listing
    assert main(["keys", "revoke", "--db", db, hash_key("alice-key-0001")[:8]]) == 0  # by a prefix of its id
    assert KeyStore(tmp_path / "k.db").lookup("alice-key-0001").revoked is not None


@pytest.mark.parametrize(
    "args,match",
    [
        (["keys", "add", "--budget", "-3"], "a budget is"),
        (["keys", "add", "--budget", "3", "--key", "no spaces here"], "a key is 8 to 256"),
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
