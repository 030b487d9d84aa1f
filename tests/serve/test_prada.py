"""PRADA: batch and one-by-one agree, the state round-trips through SQLite, natural streams pass
and synthetic ones are flagged, and the state stays bounded."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving import spec

from divqat.serve.keys import KeyStore
from divqat.serve.prada import PradaConfig, PradaState
from divqat.serve.prada_store import PradaStore

CONFIG = PradaConfig(delta=0.9, min_distances=20, window=200, max_members=30)


def assert_same(a: PradaState, b: PradaState):
    assert a.seen == b.seen and a.detected_at == b.detected_at and sorted(a.sets) == sorted(b.sets)
    for c in a.sets:
        np.testing.assert_array_equal(a.sets[c].members, b.sets[c].members)
        np.testing.assert_allclose(a.class_stats(), b.class_stats(), rtol=1e-9)
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-6)
    assert (a.w is None) == (b.w is None) and (a.w is None or abs(a.w - b.w) < 1e-6)


def stream(seed: int, n: int, dim: int = 12, classes: int = 3):
    rng = np.random.default_rng(seed)
    return rng.random((n, dim), dtype=np.float32), rng.integers(0, classes, n)


@settings(max_examples=25)
@given(st.integers(0, 10_000), st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_a_batch_is_the_same_as_its_queries_one_by_one(seed, sizes):
    x, y = stream(seed, sum(sizes))
    batched, single = PradaState(x.shape[1]), PradaState(x.shape[1])
    start = 0
    for size in sizes:
        batched.observe(x[start : start + size], y[start : start + size], CONFIG)
        start += size
    for i in range(len(x)):
        single.observe(x[i : i + 1], y[i : i + 1], CONFIG)
    batched.w, batched.detected_at = single.w, single.detected_at  # tested only after each call: may differ
    assert_same(batched, single)


def test_state_is_bounded():
    x, y = stream(0, 2000, classes=2)
    state = PradaState(x.shape[1])
    state.observe(x, y, CONFIG)
    assert len(state.distances) == CONFIG.window and state.seen == 2000
    assert all(s.size <= CONFIG.max_members for s in state.sets.values())


def natural(rng, n, dim, classes):
    """Queries like a benign client's: independent draws around each class's prototype."""
    prototypes = rng.random((classes, dim))
    labels = rng.integers(0, classes, n)
    return np.clip(prototypes[labels] + 0.15 * rng.standard_normal((n, dim)), 0, 1).astype(np.float32), labels


def synthetic(rng, n, dim, classes):
    """Queries like JBDA's: a few seeds, then each known point moved by a signed step of its own,
    small size (exponentially distributed: the distances are far from normal)."""
    points, labels = natural(rng, 10, dim, classes)
    while len(points) < n:
        steps = rng.exponential(0.02, (len(points), 1)) * np.sign(rng.standard_normal(points.shape))
        points = np.concatenate([points, np.clip(points + steps, 0, 1).astype(np.float32)])
        labels = np.concatenate([labels, labels])
    return points[:n], labels[:n]


def test_natural_streams_pass_and_synthetic_ones_are_flagged():
    config = PradaConfig(delta=0.98)  # natural streams here give W > 0.99, synthetic ones 0.90-0.975
    rng = np.random.default_rng(0)
    for seed in range(3):
        benign, attack = PradaState(64), PradaState(64)
        benign.observe(*natural(np.random.default_rng(seed), 1500, 64, 5), config)
        attack.observe(*synthetic(rng, 1500, 64, 5), config)
        assert benign.w > 0.99 and not benign.flagged
        assert attack.w < 0.98 and attack.flagged and attack.detected_at == 1500


def test_detected_at_counts_queries_and_sticks():
    config = PradaConfig(delta=0.9)
    x, y = synthetic(np.random.default_rng(1), 640, 64, 5)
    state = PradaState(64)
    for i in range(0, 640, 64):
        state.observe(x[i : i + 64], y[i : i + 64], config)
        if state.flagged:
            break
    assert state.detected_at is not None and state.detected_at % 64 == 0 and state.detected_at > 100
    first = state.detected_at
    state.observe(*natural(np.random.default_rng(2), 64, 64, 5), config)
    assert state.detected_at == first


def test_state_survives_the_database_and_a_second_process(store_target, tmp_path):
    """Two stores on one database (as two server processes): each notices the other's updates."""
    keys = KeyStore(store_target, secret_file=tmp_path / "secret")
    rowid = keys.add(spec("alice-key-0001-0123456789abcdef012", 10**6)).rowid
    x, y = stream(3, 300)
    first, second = PradaStore(keys.db, CONFIG, x.shape[1]), PradaStore(keys.db, CONFIG, x.shape[1])
    reference = PradaState(x.shape[1])
    for i, start in enumerate(range(0, 300, 50)):
        store = first if i % 2 == 0 else second
        store.observe(rowid, x[start : start + 50], y[start : start + 50])
        reference.observe(x[start : start + 50], y[start : start + 50], CONFIG)
    fresh = PradaStore(keys.db, CONFIG, x.shape[1])
    assert fresh.summary(rowid)["seen"] == 300
    assert_same(fresh.load(rowid), reference)
    count = keys.db.read("SELECT COUNT(*) FROM prada_members WHERE key_id = ?", (rowid,))[0][0]
    assert count == sum(s.size for s in reference.sets.values())  # members appended once each, never rewritten


def test_a_stale_state_is_observed_again_from_the_database(tmp_path):
    """A worker whose cached state another worker moved on: its write is refused (the stored
    count of queries seen changed), it reloads and observes again; nothing is counted twice."""
    keys = KeyStore(tmp_path / "k.db")
    rowid = keys.add(spec("alice-key-0001-0123456789abcdef012", 10**6)).rowid
    x, y = stream(5, 150)
    first, second = PradaStore(keys.db, CONFIG, x.shape[1]), PradaStore(keys.db, CONFIG, x.shape[1])
    first.observe(rowid, x[:50], y[:50])
    second.observe(rowid, x[50:100], y[50:100])
    assert first.cache[rowid].seen == 50  # first's memory is stale: it never reads before writing
    assert first.observe(rowid, x[100:], y[100:]).seen == 150
    reference = PradaState(x.shape[1])
    for start in (0, 50, 100):
        reference.observe(x[start : start + 50], y[start : start + 50], CONFIG)
    assert_same(PradaStore(keys.db, CONFIG, x.shape[1]).load(rowid), reference)


def test_a_failed_write_is_forgotten(tmp_path):
    keys = KeyStore(tmp_path / "k.db")
    rowid = keys.add(spec("alice-key-0001-0123456789abcdef012", 10**6)).rowid
    x, y = stream(4, 100)
    store = PradaStore(keys.db, CONFIG, x.shape[1])
    store.observe(rowid, x[:50], y[:50])
    real = store.write

    def failing(*args):
        raise RuntimeError("the database went away")

    store.write = failing
    with pytest.raises(RuntimeError):
        store.observe(rowid, x[50:], y[50:])
    store.write = real
    assert store.state(rowid).seen == 50  # reloaded: memory did not keep the batch the database lacks


def test_a_key_costs_at_most_its_byte_cap_and_the_oldest_members_go(store_target, tmp_path):
    """Before: bounded per class (K x members x CHW x 4 bytes: 1.2 GB a key for CIFAR-100)."""
    dim, classes = 48, 100
    config = PradaConfig(delta=0.9, min_distances=20, window=200, max_members=1000, max_key_bytes=40 * 4 * dim)
    keys = KeyStore(store_target, secret_file=tmp_path / "secret")
    rowid = keys.add(spec("alice-key-0001-0123456789abcdef012", 10**6)).rowid
    store = PradaStore(keys.db, config, dim)
    x, y = stream(6, 600, dim=dim, classes=classes)
    for start in range(0, 600, 60):
        state = store.observe(rowid, x[start : start + 60], y[start : start + 60])
        assert state.members <= 40 and state.nbytes <= config.max_key_bytes + state.distances.nbytes
    seqs = np.sort(np.concatenate([s.seqs[: s.size] for s in state.sets.values()]))
    assert seqs[0] == state.oldest and len(seqs) == 40 and seqs[-1] == state.joins - 1  # the newest 40 kept
    stored = keys.db.read("SELECT seq FROM prada_members WHERE key_id = ? ORDER BY seq", (rowid,))
    assert [s for (s,) in stored] == seqs.tolist()  # the database holds exactly the members memory holds
    assert_same(PradaStore(keys.db, config, dim).load(rowid), state)


def test_revoking_a_key_purges_its_prada_state(tmp_path):
    keys = KeyStore(tmp_path / "k.db")
    rowid = keys.add(spec("alice-key-0001-0123456789abcdef012", 10**6)).rowid
    x, y = stream(7, 100)
    PradaStore(keys.db, CONFIG, x.shape[1]).observe(rowid, x, y)
    keys.revoke("alice-key-0001-0123456789abcdef012")
    assert keys.db.read("SELECT COUNT(*) FROM prada_members")[0][0] == 0
    assert keys.db.read("SELECT COUNT(*) FROM prada_state")[0][0] == 0


def test_the_cache_keeps_the_recently_used_keys_within_its_bytes(tmp_path):
    keys = KeyStore(tmp_path / "k.db")
    x, y = stream(8, 60)
    one = PradaState(x.shape[1])
    one.observe(x, y, CONFIG)
    config = PradaConfig(**{**CONFIG.__dict__, "cache_bytes": 3 * one.nbytes})
    store = PradaStore(keys.db, config, x.shape[1])
    rows = [keys.add(spec(f"key-{i}-0123456789abcdef0123456789abcdef", 10**6)).rowid for i in range(5)]
    for rowid in rows:
        store.observe(rowid, x, y)
    assert list(store.cache) == rows[-3:]
    assert store.state(rows[0]).seen == 60 and list(store.cache) == [*rows[-2:], rows[0]]  # reloaded, now newest
