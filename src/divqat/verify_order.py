"""Proof of theft from `scramble`'s answers: does the suspect order the other classes as the
account was told?

`scramble` answers every image with the victim's top-1 and its probability exact and the other
K - 1 probabilities permuted among the other classes by a keyed permutation of the image's
coarse code (defenses/dark_knowledge.py). Per recorded image (defenses/orders.py: one per code)
the test takes the suspect's probabilities a on those K - 1 classes, removes from them their
component along the victim's own answer there (the owner has the victim; what any model of the
task shares with it only adds noise), and correlates the rest with the served probabilities b:
r = Pearson(a', b). A suspect that never saw the scrambled answers is independent of the key,
so b is a uniformly random assignment of the victim's K - 1 values to those classes, whatever
the suspect: r has mean 0 and variance exactly 1 / (K - 2) (a permutation's), and the images'
r are independent (distinct codes, independent permutations). Rows whose served runner-up ties
the top-1 (scramble then answers unscrambled) or where a' or b is constant carry no evidence,
by rules that do not depend on the key.

The test `divqat verify` runs (`sequential_test`, `Sequential`): the record's rows (its first
2,000 codes) cut into 8 equal strata by the served top-1's probability; a first round of 200 of
the 1,000 queries spread evenly over the strata, then four rounds of 200 given to the strata in
proportion to the square of their mean r so far; each row's r bet on with a fraction of the
wealth chosen from the rows before it (testing by betting), p = 1 / the largest wealth (Ville's
inequality: valid however the rows and bets were chosen, as long as each was chosen before its
own answer). Under the null every r has mean 0 whatever came before, so the wealth is a
nonnegative martingale of mean 1. A clone that kept only its confident answers carries the order
only in some strata; the rounds find them.

Behind `scramble` with `per="class"` (one keyed permutation per top-1 class) the record says so
(`Orders.per`) and the test is `class_test`: the images of a class share one permutation, so
their evidence is summed per class and tested exactly over all (K - 1)! permutations.

How it was chosen (docs/divqat.md, "A mark on every answer"). First, on the seed-0 clones of
configs/insiders.yaml: probabilities, not ranks or log-probabilities, and the victim's component
removed (13 of 14 marked clones at p < 1e-6 from the first 1,000 images, against 1 of 14 for the
runner-up match test and 8 of 14 without the removal); then the 1,000 of the most mass past the
top-1 instead of the first (14 of 14; the sum of -log10 p 295 against 130), with Bernstein's
bound on S = sqrt(K - 2) * sum r (`most_informative`, `p_value`: the fixed rule, kept for
comparison). A thief that drops its least confident answers escaped that rule on 2 of 3 seeds
against QAT; on configs/order_validation.yaml's thieves (the validation pool, filters at 0.3 and
0.7: never the evaluation grids) the sequential test with 8 strata and a first round of 20 %
verified 17 of 18 clones (the sum of -log10 p 328) against the fixed rule's 13 (281), the best
of 12 variants (2, 4 or 8 strata; asked from the most mass down or spread; a first round of 20
or 40 %) and of the earlier stratified candidates (`stratified_p_value`: 14 of 18); rounds,
prior and cap were fixed before any run.
"""

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from divqat.errors import DivqatError


def most_informative(served: Tensor, n: int, strata: int = 1) -> Tensor:
    """The indices of `n` rows, stratum by stratum: the record's rows sorted by the served top-1's
    probability (first ones first on ties) cut into `strata` equal slices, and from each an even
    share of the rows with the most probability past the top-1 (strata 1, the test's: the n of
    most mass overall; a clone learns the order best where there is mass to order). The rule
    reads only the top-1's probability, which `scramble` serves exactly, so it cannot depend on
    the key."""
    return torch.cat(asked_strata(served, n, strata))


def asked_strata(served: Tensor, n: int, strata: int = 1) -> list[Tensor]:
    """`most_informative`'s rows, one tensor per stratum (all rows when n covers the record)."""
    order = served.double().max(1).values.argsort(stable=True)
    groups = order.tensor_split(strata)
    if n >= len(order):
        return list(groups)
    shares = [n // strata + (i < n % strata) for i in range(strata)]
    return [group[:k] for group, k in zip(groups, shares, strict=True)]


def correlations(suspect: Tensor, natural: Tensor, served: Tensor) -> Tensor:
    """Per usable row, r = Pearson(suspect minus its component along the victim's own answer,
    served), over the classes other than the served top-1."""
    r, usable = row_correlations(suspect, natural, served)
    return r[usable]


def row_correlations(suspect: Tensor, natural: Tensor, served: Tensor) -> tuple[Tensor, Tensor]:
    """`correlations` for every row (0 where it carries no evidence), and which rows carry it:
    not those whose served runner-up ties the top-1 (scramble answers them unscrambled) nor
    those where either side is constant."""
    suspect, natural, served = suspect.double(), natural.double(), served.double()
    n, k = served.shape
    top = served.argmax(-1)
    rest = torch.ones(n, k, dtype=torch.bool)
    rest[torch.arange(n), top] = False

    def centred(x: Tensor) -> Tensor:
        x = x[rest].view(n, k - 1)
        return x - x.mean(1, keepdim=True)

    a, b = centred(suspect), centred(served)
    a = without(a, unit_centred(natural[rest].view(n, k - 1)))
    norms = a.norm(dim=1) * b.norm(dim=1)
    untied = served[rest].view(n, k - 1).max(1).values < served.max(1).values
    usable = untied & (norms > 1e-12)
    return torch.where(usable, (a * b).sum(1) / norms.clamp_min(1e-300), 0.0), usable


def p_value(r: Tensor, classes: int) -> float:
    """Bernstein's upper bound on P(S >= observed) for innocent suspects (see the module)."""
    scale = math.sqrt(classes - 2)
    s = scale * float(r.sum())
    if s <= 0:
        return 1.0
    return min(1.0, math.exp(-(s * s) / (2 * (len(r) + scale * s / 3))))


def stratified_p_value(parts: list[Tensor], classes: int) -> float:
    """The candidate measured against confidence filters (not the test's): the smallest of each
    stratum's p-value and all strata's together, times their number (Bonferroni: each is a valid
    bound under the null, whatever the rows' correlations)."""
    ps = [p_value(r, classes) for r in parts] + ([p_value(torch.cat(parts), classes)] if len(parts) > 1 else [])
    return min(1.0, len(ps) * min(ps))


def runner_up_matches(suspect: Tensor, served: Tensor) -> int:
    """Images where the suspect's runner-up is the served one (shown beside the test)."""
    return int((suspect.topk(2, -1).indices[:, 1] == served.topk(2, -1).indices[:, 1]).sum())


@dataclass(frozen=True)
class Sequential:
    """The order test asked in rounds, testing by betting (Shafer 2021; Waudby-Smith and Ramdas
    2023): the record cut into `strata` equal slices by the served top-1's probability, each
    asked from its most mass past the top-1 down or, `spread`, in an order whose every prefix
    spreads evenly over the slice (bit-reversed; `first_spread`: the first round's rows only, the
    later rounds' from the most mass left down); a first round of `explore` x the budget asked
    evenly over the strata, then `rounds` - 1 rounds, each given to the strata in proportion to
    the square of their mean r so far (a clone that kept only its confident answers carries the
    order only in some strata: the queries go where it does). Each row's r is bet on with a
    fraction of the wealth chosen from the rows before it in its stratum: lambda = m / (v + m^2)
    (m, v: the stratum's mean and second moment of r so far, each shrunk towards the null's 0 and
    1 / (K - 2) by `prior` rows), clipped to [0, cap]. Under the null every r has mean 0 given
    everything before it (an independent permutation per row, whatever chose the row or the
    bet), so the wealth prod(1 + lambda r) is a nonnegative martingale of mean 1 and, by Ville's
    inequality, p = 1 / its largest value is a valid p-value - with rows and bets chosen as the
    answers come in."""

    strata: int = 8
    spread: bool = False
    first_spread: bool = False
    rounds: int = 5
    explore: float = 0.2
    prior: float = 10.0
    cap: float = 0.8


@dataclass(frozen=True)
class SequentialResult:
    p_value: float
    rows: Tensor  # the record's rows asked, in the order bet on
    r: Tensor  # their correlations (0 where a row carries no evidence)
    usable: Tensor  # which of them carry evidence
    answers: Tensor  # the suspect's answers on them


def sequential_test(ask: Callable[[Tensor], Tensor], told: dict[str, Tensor], n: int,
                    plan: Sequential = Sequential()) -> SequentialResult:  # fmt: skip
    """Ask the suspect (`ask`: record rows -> its answers on their images) at most `n` of the
    record's rows in `plan`'s rounds and bet on each (see `Sequential`)."""
    served, natural = told["served"], told["natural"]
    classes = served.shape[1]
    queues = [q[spread_order(len(q))] if plan.spread else q for q in asked_strata(served, len(served), plan.strata)]
    null_variance = 1 / (classes - 2)
    sums, squares, counts = ([0.0] * len(queues) for _ in range(3))
    log_wealth, best = 0.0, 0.0
    rows, rs, usable, answers = [], [], [], []
    for round_, quota in enumerate(round_sizes(n, len(served), plan)):
        means = torch.tensor([max(t, 0.0) / (c + plan.prior) for t, c in zip(sums, counts, strict=True)])
        picked = allocate(quota, [len(q) for q in queues], means**2)
        spread = plan.first_spread and round_ == 0
        taken = [spread_order(len(q))[:k] if spread else torch.arange(k) for q, k in zip(queues, picked, strict=True)]
        batch = [q[t] for q, t in zip(queues, taken, strict=True)]
        queues = [q[~torch.isin(torch.arange(len(q)), t)] for q, t in zip(queues, taken, strict=True)]
        asked = torch.cat(batch)
        if not len(asked):
            break
        got = ask(asked)
        r, evidence = row_correlations(got, natural[asked], served[asked])
        strata = torch.arange(len(batch)).repeat_interleave(torch.tensor(picked)).tolist()
        for stratum, r_s in zip(strata, r.tolist(), strict=True):
            m = sums[stratum] / (counts[stratum] + plan.prior)
            v = (squares[stratum] + plan.prior * null_variance) / (counts[stratum] + plan.prior)
            bet = min(max(m / (v + m * m), 0.0), plan.cap)
            log_wealth += math.log1p(bet * r_s)
            best = max(best, log_wealth)
            sums[stratum] += r_s
            squares[stratum] += r_s * r_s
            counts[stratum] += 1
        rows.append(asked)
        rs.append(r)
        usable.append(evidence)
        answers.append(got)
    joined = (torch.cat(x) for x in (rows, rs, usable, answers))
    return SequentialResult(min(1.0, math.exp(-best)), *joined)


def spread_order(m: int) -> Tensor:
    """0..m-1 in bit-reversed order (0, m/2, m/4, 3m/4, ...): every prefix spreads evenly."""
    bits = max(1, (m - 1).bit_length())
    t = torch.arange(2**bits)
    reversed_ = sum(((t >> b) & 1) << (bits - 1 - b) for b in range(bits))
    return reversed_[reversed_ < m]


def round_sizes(n: int, rows: int, plan: Sequential) -> list[int]:
    """The rows asked per round: `explore` of the budget first, the rest in equal rounds."""
    n = min(n, rows)
    first = max(min(n, plan.strata), round(plan.explore * n)) if plan.rounds > 1 else n
    later = [(n - first) // (plan.rounds - 1) + (i < (n - first) % (plan.rounds - 1)) for i in range(plan.rounds - 1)]
    return [first, *later]


def allocate(quota: int, available: list[int], weights: Tensor) -> list[int]:
    """`quota` rows spread over the strata in proportion to `weights` (evenly when none is
    positive), none beyond what a stratum has left; what one cannot take goes to the others."""
    out = [0] * len(available)
    while quota > 0 and sum(a - o for a, o in zip(available, out, strict=True)) > 0:
        open_ = torch.tensor([a > o for a, o in zip(available, out, strict=True)])
        w = torch.where(open_, weights.double(), 0.0)
        w = w if float(w.sum()) > 0 else open_.double()
        share = (quota * w / w.sum()).floor().long()
        share[int(w.argmax())] += quota - int(share.sum())  # the remainder to the heaviest
        given = 0
        for i, k in enumerate(share.tolist()):
            k = min(k, available[i] - out[i])
            out[i] += k
            given += k
        quota -= given
    return out


@dataclass(frozen=True)
class ClassResult:
    p_value: float
    rows: Tensor  # the record's rows asked
    usable: Tensor  # which of them the test read (the victim's own top-1 not tied)
    answers: Tensor  # the suspect's answers on them
    evidence: dict[int, float]  # per top-1 class read, -log of its p-value over the permutations


def class_test(ask: Callable[[Tensor], Tensor], told: dict[str, Tensor], n: int, step: float = 0.02) -> ClassResult:
    """The order test of `scramble` with `per="class"`: one keyed permutation of the other K - 1
    classes per top-1 class c, the same for every image the victim calls c, so the images'
    evidence adds up to a statistic per class with an exact null over the (K - 1)! permutations
    (`class_p_value`). Asks the `n` rows of the most mass past the top-1 (`most_informative`:
    it reads only the served top-1's probability, never the key)."""
    served, natural = told["served"], told["natural"]
    rows = most_informative(served, n)
    answers = ask(rows)
    p, evidence, usable = class_p_value(answers, natural[rows], served[rows], step)
    return ClassResult(p, rows, usable, answers, evidence)


def class_p_value(suspect: Tensor, natural: Tensor, served: Tensor, step: float = 0.02):
    """(p, {class: -log p_c}, rows read): per top-1 class c, S_c = sum over its images of the
    suspect's log-probabilities of the other classes (centred, unit length, less their component
    along the victim's own) dotted with the served ones (centred, unit). Served = the victim's
    own relabelled by c's permutation, so S_c is linear in it: S_c(pi) = sum_j M[j, pi(j)], M
    summing the images' outer products. A suspect that never saw the answers is independent of
    the key, so pi is uniform over all (K - 1)! permutations, enumerated: p_c = the fraction of
    them with S_c at least the served one's. The classes' permutations are independent (their
    own HMACs), so the sum of -log p_c, rounded to `step`, has an exact null: the convolution of
    the classes' (each computed over the permutations). A clone that learned a class's
    relabelling puts its S_c near the top of all (K - 1)! (images of a class share most of
    their order, so the sum of p_c's evidence, not of z-scores, is what grows). Rows whose
    victim's top-1 ties its runner-up (scramble answers them as they are) are not read."""
    suspect, natural, served = suspect.double(), natural.double(), served.double()
    n, k = served.shape
    if k > 10:
        raise DivqatError(f"the per-class order test enumerates (K - 1)! permutations: K <= 10, the victim has {k}")
    top = natural.argmax(-1)
    two = natural.topk(2, -1).values
    usable = (two[:, 0] > two[:, 1]) & (served.argmax(-1) == top)
    permutations = all_permutations(k - 1)
    distribution, observed, evidence = np.ones(1), 0, {}
    for c in range(k):
        rows = usable & (top == c)
        if int(rows.sum()) < 2:
            continue
        others = torch.tensor([j for j in range(k) if j != c])
        a, v, s = (unit_centred(x[rows][:, others].clamp_min(1e-12).log()) for x in (suspect, natural, served))
        a = without(a, v)
        null = (a.T @ v).numpy()[np.arange(k - 1), permutations].sum(1)
        tolerance = 1e-9 * max(1.0, float(np.abs(null).max()))  # the served S_c is one of them, up to rounding
        ranked = np.sort(null)
        at_least = len(null) - np.searchsorted(ranked, null - tolerance)  # per permutation: how many reach it
        grid = np.round(-np.log(at_least / len(null)) / step).astype(np.int64)
        mine = len(null) - np.searchsorted(ranked, float((a * s).sum()) - tolerance)
        evidence[c] = float(-np.log(mine / len(null)))
        observed += round(evidence[c] / step)
        distribution = np.convolve(distribution, np.bincount(grid) / len(grid))
    p = float(min(1.0, distribution[observed:].sum())) if evidence else 1.0
    return p, evidence, usable


def unit_centred(x: Tensor) -> Tensor:
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)


def without(a: Tensor, unit: Tensor) -> Tensor:
    """Each row of `a` less its component along the same row of `unit` (unit length): what a
    suspect shares with the victim's own answer, which any model of the task shares, removed."""
    return a - (a * unit).sum(1, keepdim=True) * unit


@functools.cache
def all_permutations(m: int) -> np.ndarray:
    """(m!, m): every permutation of range(m) (m <= 9: 362,880 rows)."""
    return np.array(list(itertools.permutations(range(m))), dtype=np.int64).reshape(-1, m)
