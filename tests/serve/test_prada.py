"""PRADA: batch and one-by-one agree, the state round-trips through SQLite, natural streams pass
and synthetic ones are flagged, and the state stays bounded."""

import numpy as np
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


def test_state_survives_the_database_and_a_second_process(tmp_path):
    """Two stores on one database (as two server processes): each notices the other's updates."""
    keys = KeyStore(tmp_path / "k.db")
    rowid = keys.add(spec("alice-key-0001", 10**6)).rowid
    x, y = stream(3, 300)
    with keys.transaction() as con:
        first, second = PradaStore(con, CONFIG, x.shape[1]), PradaStore(con, CONFIG, x.shape[1])
    reference = PradaState(x.shape[1])
    for i, start in enumerate(range(0, 300, 50)):
        store = first if i % 2 == 0 else second
        with keys.transaction() as con:
            store.observe(con, rowid, x[start : start + 50], y[start : start + 50])
        reference.observe(x[start : start + 50], y[start : start + 50], CONFIG)
    with keys.transaction() as con:
        fresh = PradaStore(con, CONFIG, x.shape[1]).load(con, rowid)
        assert PradaStore(con, CONFIG, x.shape[1]).summary(con, rowid)["seen"] == 300
    assert_same(fresh, reference)
    count = keys.connection().execute("SELECT COUNT(*) FROM prada_members WHERE key_id = ?", (rowid,)).fetchone()[0]
    assert count == sum(s.size for s in reference.sets.values())  # members appended once each, never rewritten


def test_a_rolled_back_update_is_forgotten(tmp_path):
    keys = KeyStore(tmp_path / "k.db")
    rowid = keys.add(spec("alice-key-0001", 10**6)).rowid
    x, y = stream(4, 100)
    with keys.transaction() as con:
        store = PradaStore(con, CONFIG, x.shape[1])
    with keys.transaction() as con:
        store.observe(con, rowid, x[:50], y[:50])
    try:
        with keys.transaction() as con:
            store.observe(con, rowid, x[50:], y[50:])
            raise RuntimeError("the spend failed after the update")
    except RuntimeError:
        pass
    with keys.transaction() as con:
        assert store.state(con, rowid).seen == 50  # reloaded: memory did not keep the rolled-back batch
