"""The order test behind `scramble` (verify_order.py): by hand, its null, and through the black box."""

import itertools
import math

import pytest
import torch
from scipy.stats import binom
from torch import Tensor

from divqat.blackbox import BlackBoxVictim
from divqat.defenses import create_defense
from divqat.defenses.watermark import Record
from divqat.verify import Asked, verify
from divqat.verify_order import (
    Sequential,
    allocate,
    class_p_value,
    correlations,
    most_informative,
    p_value,
    round_sizes,
    sequential_test,
    stratified_p_value,
)

K = 10


@pytest.fixture
def scramble(tmp_path):
    (tmp_path / "s.key").write_bytes(bytes(range(32)))
    return create_defense("scramble", {"secret_file": str(tmp_path / "s.key")})


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(n, 1, 7, 7, generator=g), size=28, mode="bilinear")
    return (coarse + 0.05 * torch.rand(n, 1, 28, 28, generator=g)).clamp(0, 1)


def answers(x):
    """A stand-in victim: soft, deterministic probabilities from the pixels."""
    return torch.softmax(x.flatten(1)[:, :K] * 8, -1)


def test_the_correlation_and_the_bound_by_hand():
    # Row 0, classes other than the top-1 (0): served b = [.1, .2, 0], victim v = [.2, .1, 0],
    # suspect a = [.3, .5, .1]. Centred: b = [0, .1, -.1], v = [.1, 0, -.1], a = [0, .2, -.2];
    # a minus its part along v: [-.1, .2, -.1]; r = .03 / sqrt(.06 * .02) = sqrt(3) / 2.
    served = torch.tensor([[0.7, 0.1, 0.2, 0.0], [0.4, 0.4, 0.2, 0.0]])  # row 1: runner-up tied, left out
    natural = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.4, 0.4, 0.2, 0.0]])
    suspect = torch.tensor([[0.1, 0.3, 0.5, 0.1], [0.1, 0.3, 0.5, 0.1]])
    r = correlations(suspect, natural, served)
    assert r.tolist() == pytest.approx([math.sqrt(3) / 2])
    # S = sqrt(8) (0.5 + 0.5) for K = 10; Bernstein: exp(-S^2 / (2 (n + sqrt(8) S / 3))).
    assert p_value(torch.tensor([0.5, 0.5]), 10) == pytest.approx(math.exp(-8 / (2 * (2 + 8 / 3))))
    assert p_value(torch.tensor([-0.5, 0.1]), 10) == 1.0


def test_the_rows_asked_by_hand():
    # tops 0.9, 0.3, 0.6, 0.4, 0.8, 0.5 (the rest shared); sorted by top: rows 1, 3, 5, 2, 4, 0
    tops = torch.tensor([0.9, 0.3, 0.6, 0.4, 0.8, 0.5])
    served = torch.cat([tops[:, None], ((1 - tops) / 3)[:, None].expand(-1, 3)], 1)
    assert most_informative(served, 3).tolist() == [1, 3, 5]  # the most mass past the top-1
    # two strata, {1, 3, 5} and {2, 4, 0}: two rows from the first, one from the second
    assert most_informative(served, 3, strata=2).tolist() == [1, 3, 2]
    assert most_informative(served, 3, strata=3).tolist() == [1, 5, 4]
    assert sorted(most_informative(served, 9, strata=4).tolist()) == list(range(6))  # fewer rows: all


def test_the_stratified_p_value_by_hand():
    # strata r = [0.5, 0.5] and [-0.5, 0.1]; all four together sum to 0.6, K = 10
    low, high = torch.tensor([0.5, 0.5]), torch.tensor([-0.5, 0.1])
    every = p_value(torch.cat([low, high]), 10)
    assert every == pytest.approx(math.exp(-(8 * 0.36) / (2 * (4 + 8 * 0.6 / 3))))
    assert stratified_p_value([low, high], 10) == pytest.approx(min(1.0, 3 * min(p_value(low, 10), every)))
    assert stratified_p_value([low], 10) == p_value(low, 10)  # one stratum: its own p-value


def test_the_rounds_and_their_allocation_by_hand():
    plan = Sequential(strata=4, rounds=5, explore=0.2)
    assert round_sizes(1000, 2000, plan) == [200, 200, 200, 200, 200]
    assert round_sizes(10, 6, plan) == [4, 1, 1, 0, 0]  # at most the record; each stratum once first
    assert round_sizes(7, 100, Sequential(rounds=1)) == [7]
    # weights 4 : 1 : 0 give 8 and 2, the first stratum holds 3: the other 5 go by the weights left
    assert allocate(10, [3, 100, 100], torch.tensor([4.0, 1.0, 0.0])) == [3, 7, 0]
    assert allocate(5, [2, 2, 2], torch.zeros(3)) == [2, 2, 1]  # no evidence yet: evenly
    assert allocate(9, [2, 2, 2], torch.ones(3)) == [2, 2, 2]  # never more than the record


def test_a_spread_first_round_then_the_most_mass_left():
    """`first_spread`: the first round asks each stratum at bit-reversed places (0, m/2, ...), the
    later rounds from the most mass past the top-1 that is left."""
    told = records(8, torch.Generator().manual_seed(5))
    by_mass = most_informative(told["served"], 8).tolist()
    asked = []
    plan = Sequential(strata=1, rounds=2, explore=0.5, first_spread=True)
    result = sequential_test(lambda rows: asked.append(rows.tolist()) or told["natural"][rows], told, 4, plan)
    assert asked == [[by_mass[0], by_mass[4]], [by_mass[1], by_mass[2]]]
    assert result.rows.tolist() == asked[0] + asked[1]


def records(rows: int, g: torch.Generator) -> dict:
    """A victim's answers and a uniformly scrambled copy (the null's served orders)."""
    natural = torch.softmax(3 * torch.randn(rows, K, generator=g), -1)
    classes = torch.arange(K).expand(rows, K)
    rest = classes[classes != natural.argmax(-1, keepdim=True)].view(rows, K - 1)
    shuffled = rest.gather(1, torch.rand(rows, K - 1, generator=g).argsort(1))
    return {"natural": natural, "served": natural.scatter(1, rest, natural.gather(1, shuffled))}


def test_the_sequential_wealth_by_hand():
    """One stratum, one round: each row's bet m / (v + m^2) from the rows before it (m, v shrunk
    towards 0 and 1 / (K - 2) by `prior` rows), the p-value 1 / the largest wealth."""
    g = torch.Generator().manual_seed(3)
    told = records(6, g)
    suspect = 0.3 * told["served"] + 0.7 * torch.softmax(torch.randn(6, K, generator=g), -1)
    plan = Sequential(strata=1, rounds=1, prior=2.0, cap=0.8)
    result = sequential_test(lambda rows: suspect[rows], told, 6, plan)
    assert result.rows.tolist() == most_informative(told["served"], 6).tolist()
    r = correlations(suspect[result.rows], told["natural"][result.rows], told["served"][result.rows]).tolist()
    assert result.r.tolist() == pytest.approx(r) and len(r) == 6
    total, square, wealth, best = 0.0, 0.0, 1.0, 1.0
    for k, x in enumerate(r):
        m, v = total / (k + 2), (square + 2 / 8) / (k + 2)
        wealth *= 1 + min(max(m / (v + m * m), 0.0), 0.8) * x
        best = max(best, wealth)
        total, square = total + x, square + x * x
    assert result.p_value == pytest.approx(1 / best)


def test_the_sequential_test_asks_where_a_clone_kept_the_order():
    """A clone that learnt the order only on its confident answers: the rounds after the first go
    to those strata, and it is verified where the fixed rule (the rows of most mass) is not;
    innocents of any kind are flagged at most at the stated rate (Ville's inequality)."""
    g = torch.Generator().manual_seed(0)
    told = records(2000, g)
    top = told["served"].max(1).values
    kept = ((top > top.quantile(0.6)) & (top < top.quantile(0.9))).float()[:, None]
    clone = 0.6 * (kept * told["served"] + (1 - kept) * told["natural"]) + 0.4 * told["natural"]
    asked = []
    result = sequential_test(lambda rows: asked.append(rows) or clone[rows], told, 1000)
    assert len(result.rows) == 1000 and len(set(result.rows.tolist())) == 1000
    assert [len(a) for a in asked] == [200] * 5
    assert float(kept.mean()) == pytest.approx(0.3, abs=0.01)
    assert float(kept[torch.cat(asked[1:3])].mean()) > 0.5  # the next rounds go where it kept the order
    assert result.p_value < 1e-6
    rows = most_informative(told["served"], 1000)
    assert p_value(correlations(clone[rows], told["natural"][rows], told["served"][rows]), K) > 1e-3
    flagged = 0
    for _ in range(150):
        innocent = records(300, g)
        suspect = 0.5 * innocent["natural"] + 0.5 * torch.softmax(3 * torch.randn(300, K, generator=g), -1)
        flagged += sequential_test(lambda rows, s=suspect: s[rows], innocent, 150).p_value < 0.05
    assert flagged <= binom.ppf(1 - 1e-6, 150, 0.05)


def test_innocents_meet_the_null_whatever_they_are():
    """For a fixed suspect and victim, a uniformly permuted served order gives r of mean 0 and
    variance 1 / (K - 2), and the bound flags at most the stated rate (it is conservative)."""
    g = torch.Generator().manual_seed(0)
    natural = torch.softmax(3 * torch.randn(400, 30, K, generator=g), -1)
    suspect = natural + 0.05 * torch.rand(400, 30, K, generator=g)  # an innocent much like the victim
    flagged, rs = 0, []
    for own, sus in zip(natural, suspect, strict=True):
        served = own.clone()
        top = own.argmax(-1)
        for i in range(len(own)):
            rest = [c for c in range(K) if c != top[i]]
            served[i, rest] = own[i, rest][torch.randperm(K - 1, generator=g)]
        r = correlations(sus, own, served)
        rs.append(r)
        flagged += p_value(r, K) < 0.05
    r = torch.cat(rs)
    assert abs(float(r.mean())) < 4 * math.sqrt(1 / (K - 2) / len(r))
    assert float(r.var()) == pytest.approx(1 / (K - 2), rel=0.06)
    assert flagged <= binom.ppf(1 - 1e-6, 400, 0.05)


def test_a_clone_of_the_scrambled_answers_is_verified_and_innocents_are_not(scramble, tmp_path):
    x = images(3000, seed=1)
    victim = BlackBoxVictim(answers, 10_000, [scramble])
    told = victim.query(x)
    orders = victim.record.orders
    assert len(victim.record) == 0 and 100 < len(orders) <= len(x)  # one row per code
    t = orders.tensors()
    assert torch.equal(t["served"], scramble(t["natural"], t["images"])) and torch.equal(
        t["natural"], answers(t["images"])
    )
    path = tmp_path / "r.safetensors"
    victim.record.save(path)
    assert torch.equal(Record.load(path).orders.tensors()["served"], t["served"])

    def clone(weight):  # a soft clone learns a little of the served order on the images it saw
        def answer(batch):
            hits = (batch[:, None] == x[None]).flatten(2).all(-1)
            out = answers(batch)
            seen = hits.any(1)
            out[seen] = weight * told[hits[seen].float().argmax(1)] + (1 - weight) * out[seen]
            return out

        return answer

    for weight in (1.0, 0.2):
        (verdict,) = verify(clone(weight), {"thief": victim.record}, max_queries=500)["accounts"]
        assert verdict["test"] == "order" and verdict["stolen"] and verdict["asked"] == 500, verdict
    flatten = create_defense("flatten")
    innocents = [answers, lambda b: flatten(answers(b), b), lambda b: torch.rand(len(b), K)]
    for innocent in innocents:
        (verdict,) = verify(innocent, {"thief": victim.record})["accounts"]
        assert not verdict["stolen"] and verdict["p_value"] > 1e-3, verdict


def test_a_model_that_learned_the_per_class_orders_is_verified_and_innocents_are_not(tmp_path):
    (tmp_path / "s.key").write_bytes(bytes(range(32)))
    scramble = create_defense("scramble", {"secret_file": str(tmp_path / "s.key"), "per": "class"})
    victim = BlackBoxVictim(answers, 10_000, [scramble])
    victim.query(images(2000, seed=3))
    path = tmp_path / "r.safetensors"
    victim.record.save(path)
    record = Record.load(path)
    assert record.orders.per == "class" and len(record.orders) > 100

    def learned(batch):  # the relabelling learned as a rule, half of it
        return 0.5 * scramble(answers(batch), batch) + 0.5 * answers(batch)

    (verdict,) = verify(learned, {"thief": record}, max_queries=300)["accounts"]
    assert verdict["test"] == "order" and verdict["stolen"] and verdict["asked"] == 300, verdict
    per_image = create_defense("scramble", {"secret_file": str(tmp_path / "s.key")})
    flatten = create_defense("flatten")
    noise = torch.Generator().manual_seed(4)
    for innocent in [answers, lambda b: flatten(answers(b), b), lambda b: torch.rand(len(b), K, generator=noise),
                     lambda b: per_image(answers(b), b)]:  # fmt: skip
        (verdict,) = verify(innocent, {"thief": record})["accounts"]
        assert not verdict["stolen"] and verdict["p_value"] > 1e-3, verdict


def test_one_verification_sends_each_image_once_and_its_tests_share_the_answers(scramble):
    x = images(600, seed=5)
    records = []
    for part in (x[:400], x[200:]):  # two keys of one thief: the middle 200 images asked through both
        victim = BlackBoxVictim(answers, 10_000, [scramble])
        victim.query(part)
        records.append(victim.record)
    sent = []

    def suspect(batch):
        sent.extend(Asked.keys(batch))
        return answers(batch)

    result = verify(suspect, {"a": records[0], "b": records[1]}, together=True, max_queries=400)
    assert [a["account"] for a in result["accounts"]][1:] == ["a", "b"]
    assert len(sent) == len(set(sent)) == result["queries"] <= 400
    assert sum(a["asked"] for a in result["accounts"]) > result["queries"]  # the pool's answers read again, unsent


def test_rows_a_later_defense_changed_are_not_recorded(scramble, tmp_path):
    (tmp_path / "w.key").write_bytes(bytes(range(40, 72)))
    mark = create_defense("watermark", {"rate": 0.2, "secret_file": str(tmp_path / "w.key")})
    victim = BlackBoxVictim(answers, 10_000, [scramble, mark])
    x = images(1000, seed=2)
    told = victim.query(x)
    record = victim.record
    assert len(record) > 20 and len(record.orders) > 20
    t = record.orders.tensors()
    marked = record.tensors()["images"]
    assert not (t["images"][:, None] == marked[None]).flatten(2).all(-1).any()  # a watermarked answer is no order
    rows = [int((x == im).flatten(1).all(1).nonzero()[0]) for im in t["images"]]
    assert torch.equal(told[rows], t["served"])


def test_a_theft_behind_scramble_is_verified_in_its_result(scramble, tiny_splits):
    """A grid's attack job tests its own clone against the orders its thief was told."""
    from divqat.configs import AttackConfig
    from divqat.extraction import steal

    record = Record()
    _, result = steal(answers, tiny_splits, AttackConfig(pool="in", budget=200, epochs=1), defenses=(scramble,),
                      record=record)  # fmt: skip
    assert len(record.orders) > 20 and result["watermarked_answers"] == 0
    assert {"order_p_value", "order_stolen", "order_asked", "order_mean_correlation"} <= result.keys()
    assert "watermark_p_value" not in result


def relabelled(natural: Tensor, sources: dict[int, list[int]]) -> Tensor:
    """The victim's answers as `scramble(per="class")` serves them: per top-1 class c, class
    others[j] told the probability of class others[sources[c][j]]."""
    k = natural.shape[1]
    out = natural.clone()
    for i, c in enumerate(natural.argmax(-1).tolist()):
        others = [j for j in range(k) if j != c]
        out[i, others] = natural[i, [others[t] for t in sources[c]]]
    return out


def test_the_per_class_p_value_is_exact_by_brute_force():
    """Four classes, two of them top-1s: every pair of relabellings (3! x 3!) served in turn; the
    p-value of the one served is the fraction of pairs whose statistic reaches it."""
    g = torch.Generator().manual_seed(0)
    natural = torch.softmax(torch.randn(12, 4, generator=g) + 6 * torch.eye(4)[torch.arange(12) % 2], -1)
    suspect = torch.softmax(torch.randn(12, 4, generator=g), -1)
    perms = list(itertools.permutations(range(3)))

    def statistic(pair) -> int:
        _, evidence, _ = class_p_value(suspect, natural, relabelled(natural, dict(zip((0, 1), pair, strict=True))))
        return sum(round(e / 0.02) for e in evidence.values())

    stats = {pair: statistic(pair) for pair in itertools.product(perms, perms)}
    for served in [(perms[1], perms[4]), (perms[0], perms[0]), max(stats, key=stats.get)]:
        p, evidence, usable = class_p_value(
            suspect, natural, relabelled(natural, dict(zip((0, 1), served, strict=True)))
        )
        assert set(evidence) == {0, 1} and bool(usable.all())
        brute = sum(v >= stats[served] for v in stats.values()) / len(stats)
        assert p == pytest.approx(brute, rel=1e-9)
    assert class_p_value(suspect, natural, relabelled(natural, {0: perms[0], 1: perms[0]}))[0] <= 1


def test_the_per_class_test_meets_its_null_and_finds_a_clone():
    """Six classes: innocents (the victim's answers with noise) are flagged at most at the stated
    rate over random keys; a clone that learned a third of the relabelled answers is found."""
    g = torch.Generator().manual_seed(1)
    flagged, found = 0, 0
    trials = 200
    for _ in range(trials):
        natural = torch.softmax(torch.randn(60, 6, generator=g) + 6 * torch.eye(6)[torch.arange(60) % 6], -1)
        served = relabelled(natural, {c: torch.randperm(5, generator=g).tolist() for c in range(6)})
        innocent = natural * torch.exp(0.3 * torch.randn(60, 6, generator=g))
        innocent /= innocent.sum(1, keepdim=True)
        flagged += class_p_value(innocent, natural, served)[0] < 0.05
        found += class_p_value(0.3 * served + 0.7 * innocent, natural, served)[0] < 1e-6
    assert flagged <= binom.ppf(1 - 1e-6, trials, 0.05)
    assert found == trials
