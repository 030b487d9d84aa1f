"""The watermark (defenses/watermark.py) and the verification that reads its record (verify.py)."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from divqat.blackbox import BlackBoxVictim
from divqat.cli import main
from divqat.defenses import create_defense
from divqat.defenses.watermark import Record, pooled
from divqat.errors import DivqatError
from divqat.verify import POOLED, Asked, verify

K = 10


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "wm.key"
    path.write_bytes(bytes(range(32)))
    return path


def watermark(secret, rate=0.05):
    return create_defense("watermark", {"rate": rate, "secret_file": str(secret)})


def images(n, seed=0):
    """Images with structure at the watermark's scale (as natural images have; uniform noise has
    none: all of it shares one coarse code, so one mark)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(n, 1, 7, 7, generator=g), size=28, mode="bilinear")
    return (coarse + 0.05 * torch.rand(n, 1, 28, 28, generator=g)).clamp(0, 1)


def answers(x):
    """A stand-in victim: confident, deterministic probabilities from the pixels."""
    return torch.softmax(x.flatten(1)[:, :K] * 20, -1)


def test_the_same_image_gets_the_same_answer_from_any_instance_and_none_other_with_another_secret(secret, tmp_path):
    x = images(2000)
    first, second = watermark(secret)(answers(x), x), watermark(secret)(answers(x), x)  # a restart: a new instance
    assert torch.equal(first, second)
    other = tmp_path / "other.key"
    other.write_bytes(bytes(range(1, 33)))
    marked = lambda w: w(answers(x), x).argmax(-1) != answers(x).argmax(-1)  # noqa: E731
    assert not torch.equal(marked(watermark(secret)), marked(watermark(other)))


def test_the_rate_is_within_binomial_bounds_on_20k_images(secret):
    """The rate is a fraction of codes (images that look alike share one): binomial over the distinct codes."""
    x = images(20_000, seed=1)
    for rate in (0.005, 0.05):
        w = watermark(secret, rate)
        cells = w.codes(x)
        _, first = unique_rows(cells)
        n = int(w.select(answers(x[first]), x[first]).selected.sum())
        low, high = binom.interval(1 - 1e-6, len(first), rate)
        assert len(first) > 15_000 and low <= n <= high, (rate, n, len(first))


def test_unsure_answers_are_marked_at_their_own_rate_and_sure_ones_at_the_rate(secret):
    """unsure_below: answers whose top probability is below it are selected at unsure_rate,
    the rest at rate - each within binomial bounds over its distinct codes."""
    x = images(20_000, seed=2)
    _, first = unique_rows(watermark(secret).codes(x))
    x = x[first]
    g = torch.Generator().manual_seed(3)
    confidence = torch.rand(len(x), generator=g)  # half the answers below 0.5
    probs = torch.full((len(x), K), 0.0)
    probs[:, 0] = confidence
    probs[:, 1:] = ((1 - confidence) / (K - 1)).unsqueeze(1)
    w = create_defense(
        "watermark", {"rate": 0.005, "secret_file": str(secret), "unsure_below": 0.5, "unsure_rate": 0.05}
    )
    selected = w.select(probs, x).selected
    unsure = confidence < 0.5
    for rows, rate in ((unsure, 0.05), (~unsure, 0.005)):
        low, high = binom.interval(1 - 1e-6, int(rows.sum()), rate)
        assert low <= int(selected[rows].sum()) <= high, (rate, int(selected[rows].sum()), int(rows.sum()))
    assert torch.equal(w.select(probs, x).selected, selected)  # the same answers, the same marks
    off = create_defense("watermark", {"rate": 0.005, "secret_file": str(secret), "unsure_rate": 0.05})
    assert torch.equal(off.select(probs, x).selected, watermark(secret, 0.005).select(probs, x).selected)


def unique_rows(cells):
    seen = {}
    for i, row in enumerate(map(tuple, cells.tolist())):
        seen.setdefault(row, i)
    return list(seen), torch.tensor(list(seen.values()))


def test_the_top1_changes_exactly_on_selected_images_into_a_valid_distribution(secret):
    x = images(3000, seed=2)
    w = watermark(secret, 0.1)
    clean = answers(x)
    out = w(clean, x)
    selected = w.select(clean, x).selected
    changed = out.argmax(-1) != clean.argmax(-1)
    assert selected.sum() > 100 and torch.equal(changed, selected)
    assert torch.equal(out[~selected], clean[~selected])
    assert torch.allclose(out.sum(-1), torch.ones(len(x))) and (out >= 0).all()
    untied = (clean >= clean.max(-1, keepdim=True).values).sum(-1) == 1
    assert torch.equal(out[untied].sort(-1).values, clean[untied].sort(-1).values)  # two probabilities swapped


def test_mark_probability_lifts_the_mark_and_keeps_the_others_order_on_marked_rows_only(secret):
    """mark_probability: a marked answer gives its mark at least that much, the other classes
    scaled down together; unmarked answers and the top-1 everywhere are those of the swap alone."""
    x = images(3000, seed=2)
    clean = answers(x).double()
    swap = watermark(secret, 0.1)(clean, x)
    w = create_defense("watermark", {"rate": 0.1, "secret_file": str(secret), "mark_probability": 0.9})
    out = w(clean, x)
    selected = w.select(clean, x).selected
    assert torch.equal(out[~selected], clean[~selected]) and torch.equal(out.argmax(-1), swap.argmax(-1))
    assert torch.allclose(out.sum(-1), torch.ones(len(x), dtype=out.dtype)) and (out >= 0).all()
    top = out[selected].max(-1).values
    assert torch.allclose(top, swap[selected].max(-1).values.clamp_min(0.9))
    others = lambda p: p[selected].sort(dim=-1, stable=True).indices[:, :-1]  # noqa: E731 - all but the mark, in order
    assert torch.equal(others(out), others(swap))


def test_lifted_by_hand():
    from divqat.defenses.watermark import lifted

    probs = torch.tensor([[0.1, 0.6, 0.3], [0.05, 0.95, 0.0]])
    got = lifted(probs, torch.tensor([1, 1]), 0.9)
    # row 0: the mark 0.6 -> 0.9, the others' 0.4 scaled to 0.1: 0.025, 0.075; row 1 already holds 0.95
    assert torch.allclose(got, torch.tensor([[0.025, 0.9, 0.075], [0.05, 0.95, 0.0]]))


def test_a_little_noise_rarely_moves_the_mark(secret):
    x = images(4000, seed=3)
    noisy = (x + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    w = watermark(secret, 0.5)
    a, b = w.select(answers(x), x).selected, w.select(answers(x), noisy).selected
    assert (a != b).float().mean() < 0.1  # selection at rate 0.5 flips on ~ half the moved codes


@pytest.mark.parametrize("lift", [0.0, 0.9])
def test_the_record_keeps_what_each_account_was_told_once(secret, lift):
    x = images(400, seed=5)
    mark = create_defense("watermark", {"rate": 0.1, "secret_file": str(secret), "mark_probability": lift})
    victim = BlackBoxVictim(answers, 10_000, [mark])
    told = victim.query(x)
    victim.query(x)  # asked again: the same answers, recorded once
    record = victim.record
    marked = (told.argmax(-1) != answers(x).argmax(-1)).nonzero().squeeze(1)
    assert len(record) == len(marked) > 10
    t = record.tensors()
    assert torch.equal(t["images"], x[marked]) and torch.equal(t["mark"], told[marked].argmax(-1))
    assert torch.allclose(t["confidence"], told[marked].max(-1).values, atol=1e-5)  # what the mark was served with


def test_a_clone_that_memorised_the_record_is_verified_and_innocent_models_are_not(secret, tmp_path):
    x = images(3000, seed=6)
    victim = BlackBoxVictim(answers, 10_000, [watermark(secret, 0.02)])
    told = victim.query(x)
    record = victim.record
    path = tmp_path / "record.safetensors"
    record.save(path)
    loaded = Record.load(path).tensors()
    assert loaded["mark"].tolist() == record.mark
    assert torch.equal(loaded["natural"], answers(record.tensors()["images"]))  # the victim's own answers, kept
    assert torch.equal(loaded["confidence"], record.tensors()["confidence"])

    def clone(batch):  # answers what it was told on the images it saw: a memorising clone
        hits = (batch[:, None] == x[None]).flatten(2).all(-1)
        out = answers(batch)
        seen = hits.any(1)
        out[seen] = told[hits[seen].float().argmax(1)]
        return out

    stolen = verify(clone, {"thief": record})
    (account,) = stolen["accounts"]
    assert account["stolen"] and account["p_value"] < 1e-12 and account["matches"] == len(record)
    innocents = [answers, lambda b: answers(b.flip(-1)), lambda b: torch.rand(len(b), K)]
    for innocent in innocents:
        (verdict,) = verify(innocent, {"thief": record})["accounts"]
        assert not verdict["stolen"] and verdict["p_value"] > 1e-3
    assert stolen["queries"] == len(record) <= 1000
    # A record of before the victim's own answers were kept loads and verifies without them.
    record.natural = []
    record.save(path)
    assert "natural" not in Record.load(path).tensors()
    assert verify(clone, {"thief": Record.load(path)})["accounts"][0]["p_value"] < 1e-12


def test_the_budget_goes_where_the_records_can_use_it():
    from divqat.verify import shares

    assert shares([50, 2000], 1000) == [50, 950]  # a watermark's few rows leave their share to the orders
    assert shares([2000, 50], 1000) == [950, 50]
    assert shares([10, 10], 7) == [3, 4] and shares([3, 3, 3], 2) == [0, 1, 1] and shares([5], 100) == [5]


def test_a_later_test_gets_for_free_only_images_no_answer_chose():
    asked = Asked(lambda b: torch.full((len(b), K), 1 / K), batch_size=4)
    images = torch.arange(6.0).view(6, 1, 1, 1)
    keys = Asked.keys(images)
    asked.plan(keys[:2])  # a watermark test's first two rows
    assert asked.charged == 2 and asked.fresh(keys) == 4 and asked.prefix(keys, 1) == 3
    asked.charge(3)  # a sequential order test that read part of its record: charged, nothing freed
    assert asked.charged == 5 and asked.fresh(keys) == 4
    asked.plan(keys[1:4])
    assert asked.charged == 7 and asked.fresh(keys) == 2
    answers = asked.rows(images, keys, K)(torch.tensor([0, 0, 5]))
    assert answers.shape == (3, K) and asked.queries == 2  # an image asked twice in one call, sent once
    assert Asked.keys(torch.zeros(1, 1, 2, 2)) != Asked.keys(torch.zeros(1, 2, 2, 1))  # the shape is in the key


def test_verify_spends_at_most_the_queries_it_is_given(secret):
    x = images(3000, seed=7)
    victim = BlackBoxVictim(answers, 10_000, [watermark(secret, 0.1)])
    victim.query(x)
    asked = []

    def suspect(batch):
        asked.append(len(batch))
        return answers(batch)

    result = verify(suspect, {"a": victim.record, "b": victim.record}, max_queries=50)
    assert sum(asked) == result["queries"] == 50
    # b's record is a's: its first 25 answers are a's, reused, and its share of 25 asks the next 25.
    assert [a["asked"] for a in result["accounts"]] == [25, 50]


def test_a_thief_spread_over_many_keys_is_proven_together_and_a_code_told_twice_counts_once(secret):
    x = images(3000, seed=11)
    chunks = [x[i : i + 150] for i in range(0, 3000, 150)] + [x[:150]]  # 21 keys; the last asks the first's again
    keys, told = [], []
    for chunk in chunks:
        victim = BlackBoxVictim(answers, 10_000, [watermark(secret, 0.02)])
        told.append(victim.query(chunk))
        keys.append(victim.record)
    told = torch.cat(told[:-1])

    sent = []

    def clone(batch):  # memorised what it was told, through every key; each image it is sent, noted
        sent.extend(Asked.keys(batch))
        hits = (batch[:, None] == x[None]).flatten(2).all(-1)
        out = answers(batch)
        seen = hits.any(1)
        out[seen] = told[hits[seen].float().argmax(1)]
        return out

    accounts = {f"key {i}": r for i, r in enumerate(keys)}
    assert len(pooled(keys)) == len({c for r in keys for c in r.codes}) == sum(map(len, keys[:-1])) > 40
    alone = verify(clone, accounts)
    assert not any(a["stolen"] for a in alone["accounts"])  # 0-6 marks a key: too few alone
    sent.clear()
    result = verify(clone, accounts, together=True, max_queries=100)
    first, *rest = result["accounts"]
    assert first["account"] == POOLED and first["stolen"] and first["asked"] <= 50 and first["p_value"] < 1e-20
    assert not any(a["stolen"] for a in rest) and result["queries"] <= 100
    # The pooled test asked each key's first marks: the keys' own tests read them again, unsent.
    assert len(sent) == len(set(sent)) == result["queries"]
    assert sum(a["asked"] for a in result["accounts"]) > result["queries"]
    assert result["per_account_threshold"] == pytest.approx(1e-6 / (1 + sum(len(r) > 0 for r in keys)))
    for innocent in (answers, lambda b: answers(b.flip(-1))):
        assert not any(a["stolen"] for a in verify(innocent, accounts, together=True)["accounts"])
    one = verify(clone, {"key 0": keys[0]}, together=True)["accounts"]  # one account: nothing to pool
    assert [a["account"] for a in one] == ["key 0"]
    with pytest.raises(DivqatError, match="named"):
        verify(clone, {POOLED: keys[0], "key 1": keys[1]}, together=True)


def test_the_pool_keeps_the_kind_of_most_of_the_orders():
    from divqat.defenses.orders import Orders

    def told(per, codes):
        n = len(codes)
        return Record(orders=Orders(codes=codes, images=list(torch.zeros(n, 1, 2, 2)), natural=list(torch.eye(n, 3)),
                                    served=list(torch.eye(n, 3)), per=per))  # fmt: skip

    pool = pooled([told("image", ["a", "b"]), told("class", ["c", "d", "e"]), told("class", ["e", "f"])])
    assert pool.orders.per == "class" and pool.orders.codes == ["c", "e", "d", "f"] and len(pool) == 0  # in turn
    assert pooled([told("image", ["a"]), told("class", ["b"])]).orders.per == "image"  # a tie: the first kind
    assert pooled([told("image", ["a"]), told("image", ["b"]), told("class", ["c", "d", "e"])]).orders.per == "class"


@settings(max_examples=50, deadline=None)
@given(accounts=st.lists(st.lists(st.integers(0, 30), unique=True, max_size=12), min_size=1, max_size=K))
def test_the_pool_holds_every_code_once_as_the_first_key_in_turn_told_it(accounts):
    def told(key, codes):  # the row's mark names its key, so the kept row shows whose it is
        return Record(classes=K, codes=[str(c) for c in codes], images=list(torch.zeros(len(codes), 1, 2, 2)),
                      top1=[0] * len(codes), mark=[key] * len(codes))  # fmt: skip

    pool = pooled([told(key, codes) for key, codes in enumerate(accounts)])
    in_turn = {}
    for i in range(max(map(len, accounts))):
        for key, codes in enumerate(accounts):
            if i < len(codes):
                in_turn.setdefault(str(codes[i]), key)
    assert pool.codes == list(in_turn) and pool.mark == list(in_turn.values()) and len(pool.orders) == 0


def test_the_pool_keeps_the_victims_own_answers_only_where_every_record_has_them_and_refuses_two_victims():
    def told(codes, natural=True, shape=(1, 2, 2), classes=3):
        n = len(codes)
        return Record(classes=classes, codes=codes, images=list(torch.zeros(n, *shape)), top1=[0] * n, mark=[1] * n,
                      natural=list(torch.eye(n, 3)) if natural else [], confidence=[0.9] * n)  # fmt: skip

    assert len(pooled([told(["a", "b"]), told(["b", "c"])]).tensors()["natural"]) == 3
    assert "natural" not in pooled([told(["a", "b"]), told(["c"], natural=False)]).tensors()
    for other in (told(["c"], shape=(3, 2, 2)), told(["c"], classes=10)):
        with pytest.raises(DivqatError, match="different victims"):
            pooled([told(["a"]), other])
    from divqat.defenses.orders import Orders

    orders_only = [Record(orders=Orders(codes=["x"], images=[torch.zeros(1, 2, 2)], natural=[torch.ones(k) / k],
                                        served=[torch.ones(k) / k])) for k in (3, 4)]  # fmt: skip
    with pytest.raises(DivqatError, match="different victims"):  # scramble alone: the classes read from the orders
        pooled(orders_only)


@pytest.mark.parametrize(
    "params,match",
    [({"rate": 0.01}, "needs a secret"), ({"secret_file": "/nonexistent/wm.key"}, "does not exist")],
)
def test_a_missing_secret_is_a_one_line_error(params, match):
    with pytest.raises(DivqatError, match=match):
        create_defense("watermark", params)


def test_the_secret_appears_in_no_parameter_or_representation(secret):
    w = watermark(secret)
    text = json.dumps(w.params()) + repr(w) + str(w)
    assert secret.read_bytes().hex() not in text and "\\x00\\x01" not in text and str(secret) in text


def saved_record(secret, tmp_path, seed: int):
    """What a stand-in victim told one account about 500 images, saved as a grid's attack saves it."""
    victim = BlackBoxVictim(answers, 10_000, [watermark(secret, 0.1)])
    victim.query(images(500, seed=seed))
    path = tmp_path / "r.safetensors"
    victim.record.save(path)
    return path


def test_bad_suspects_are_one_line_errors(secret, tmp_path, capsys):
    record = saved_record(secret, tmp_path, seed=8)
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"not a protobuf")
    cases = {
        "no such suspect": [str(tmp_path / "absent.onnx")],
        "not a valid ONNX": [str(not_onnx)],
        "cannot reach": ["--url", "http://127.0.0.1:9", "--suspect-key", "abcdefgh12"],
    }
    for match, args in cases.items():
        assert main(["verify", *args, "--record", str(record)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and match in err and "Traceback" not in err, err


def test_a_theft_behind_the_watermark_is_verified_in_its_result(secret, tiny_splits):
    """The grid's attack jobs verify their own clone against what their thief was told."""
    from divqat.configs import AttackConfig
    from divqat.extraction import steal

    config = AttackConfig(pool="in", budget=200, epochs=1)
    record = Record()
    _, result = steal(answers, tiny_splits, config, defenses=(watermark(secret, 0.2),), record=record)
    assert result["watermarked_answers"] == len(record) > 5
    assert {"watermark_p_value", "watermark_matches", "watermark_stolen", "watermark_asked"} <= result.keys()
    _, plain = steal(answers, tiny_splits, config)
    assert plain["watermarked_answers"] == 0 and "watermark_p_value" not in plain


def test_the_score_test_by_hand():
    from divqat.verify import mark_ranks, score_sum_p_value

    top1 = torch.tensor([0, 0])
    scores = torch.tensor([[9.0, 1.0, 0.0], [9.0, 2.0, 0.0]])  # the terms: {1, 0} and {2, 0}, each half and half
    assert score_sum_p_value(scores, top1, torch.tensor([1, 1]), 1.0) == pytest.approx(1 / 4)  # only 1 + 2 reaches 3
    assert score_sum_p_value(scores, top1, torch.tensor([2, 1]), 1.0) == pytest.approx(2 / 4)  # 0 + 2 and 1 + 2
    assert score_sum_p_value(scores, top1, torch.tensor([2, 2]), 1.0) == pytest.approx(1.0)
    assert score_sum_p_value(scores * 0.3, top1, torch.tensor([1, 1]), 0.5) == pytest.approx(1 / 4)  # {1, 0}, {1, 0}
    scores = torch.tensor([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.1, 0.2, 0.7]])
    top1, mark = torch.tensor([0, 0, 0, 2]), torch.tensor([2, 2, 1, 0])
    # the victim's class is out; ties go by class index: row 1's class 1 ties with the mark 2 and comes first
    assert mark_ranks(scores, top1, mark).tolist() == [1, 1, 0, 1]


def test_the_marks_scores_by_hand():
    """z-scores of the log-probabilities over the classes other than the victim's top-1, less their
    fit on the victim's own: logs (2, 0, 1) centre to (1, -1, 0); the victim's (1, 0, 0) to
    (2, -1, -1) / 3, whose fit takes 1.5 of it, leaving (0, -0.5, 0.5); the marks' scores weigh
    them by the victim's top probability, e^5 / (e^5 + e + 2)."""
    from divqat.verify import mark_scores, residual_z

    answer, own = torch.tensor([[5.0, 2.0, 0.0, 1.0]]).softmax(1), torch.tensor([[5.0, 1.0, 0.0, 0.0]]).softmax(1)
    top1 = torch.tensor([0])
    z, served = 1.5**0.5, math.exp(5) / (math.exp(5) + math.e + 2)
    assert residual_z(answer, None, top1)[0, 1:].tolist() == pytest.approx([z, -z, 0], abs=1e-6)
    assert residual_z(answer, own, top1)[0, 1:].tolist() == pytest.approx([0, -z, z], abs=1e-6)
    assert mark_scores(answer, None, top1)[0, 1:].tolist() == pytest.approx([z, -z, 0], abs=1e-6)  # no weight
    assert mark_scores(answer, own, top1)[0, 1:].tolist() == pytest.approx([0, -z * served, z * served], abs=1e-6)
    assert mark_scores(own, own, top1).abs().max() < 1e-6  # the victim itself shows nothing
    lifted = mark_scores(answer, own, top1, torch.tensor([0.9]))  # the record's served confidence, where it has one
    assert lifted[0, 1:].tolist() == pytest.approx([0, -z * 0.9, z * 0.9], abs=1e-6)


@pytest.mark.parametrize("kept", ["images only", "own answers", "own answers and served confidence"])
def test_innocent_suspects_are_flagged_at_the_stated_rate(kept):
    """The null is exact: random marks against any fixed suspect give uniform p-values (a 5 % test
    flags 5 % of innocents), so p < 1e-6 flags innocents one time in a million - with the victim's
    own answers and the marks' served confidence in the record or without."""
    g = torch.Generator().manual_seed(0)
    flagged = 0
    for _ in range(400):
        scores = torch.rand(30, K, generator=g) ** 3  # any suspect at all
        own = torch.rand(30, K, generator=g).softmax(1)
        top1 = own.argmax(1)
        mark = (top1 + 1 + torch.randint(0, K - 1, (30,), generator=g)) % K
        images = torch.arange(30.0).view(30, 1, 1, 1).expand(30, 1, 2, 2)  # distinct, as a record's are
        record = Record(classes=K, codes=[str(i) for i in range(30)], images=list(images),
                        top1=top1.tolist(), mark=mark.tolist(),
                        natural=list(own) if kept != "images only" else [],
                        confidence=torch.rand(30, generator=g).tolist() if "confidence" in kept else [])  # fmt: skip
        (a,) = verify(lambda b, s=scores: s[b[:, 0, 0, 0].long()], {"x": record}, significance=0.05)["accounts"]
        flagged += a["stolen"]
    low, high = binom.interval(1 - 1e-6, 400, 0.05)
    assert low <= flagged <= high, flagged


def onnx_file(path, input_shape, op):
    """A tiny ONNX graph by hand: `op` of an (N, *input_shape) input."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "suspect", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_suspects_of_the_wrong_shape_or_no_classifier_are_one_line_errors(secret, tmp_path, capsys):
    record = saved_record(secret, tmp_path, seed=9)
    cases = {
        "takes inputs of shape": onnx_file(tmp_path / "rgb.onnx", [3, 8, 8], "Flatten"),
        "not a classifier": onnx_file(tmp_path / "identity.onnx", [1, 28, 28], "Identity"),
    }
    for match, path in cases.items():
        assert main(["verify", str(path), "--record", str(record)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and match in err and "Traceback" not in err, err


def test_suspects_that_cannot_be_tested_exactly_are_refused(secret):
    """Another number of classes changes the null, NaN scores would rank every mark first: no p-value."""
    x = images(500, seed=10)
    victim = BlackBoxVictim(answers, 10_000, [watermark(secret, 0.1)])
    victim.query(x)
    record = {"a": victim.record}
    assert victim.record.classes == K
    with pytest.raises(DivqatError, match="answers 20 classes; the victim has 10"):
        verify(lambda b: torch.rand(len(b), 20), record)
    with pytest.raises(DivqatError, match="NaN or infinite"):
        verify(lambda b: torch.full((len(b), K), float("nan")), record)


def test_the_watermark_comes_last_and_once(secret):
    from divqat.defenses.chain import build_chain

    mark = f"watermark:rate=0.1,secret_file={secret}"
    assert [d.name for d in build_chain(["reverse-sigmoid", mark, "top-k"])] == [
        "reverse-sigmoid",
        "watermark",
        "top-k",
    ]
    with pytest.raises(DivqatError, match="after random-noise"):
        build_chain([mark, "random-noise"])
    with pytest.raises(DivqatError, match="one watermark"):
        build_chain([mark, mark])
