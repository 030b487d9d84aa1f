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
r are independent (distinct codes, independent permutations). The statistic is
S = sqrt(K - 2) * sum r, a sum of independent terms of mean 0, variance 1 and at most
sqrt(K - 2); its p-value is Bernstein's bound exp(-S^2 / (2 (n + sqrt(K - 2) S / 3))), an
upper bound on the exact tail (conservative: no normal approximation claimed). Rows whose
served runner-up ties the top-1 (scramble then answers unscrambled) or where a' or b is
constant carry no evidence and are left out, by rules that do not depend on the key.

The images asked: of the record's (the first 2,000 codes), the `n` with the most mass past the
top-1 (`most_informative`), a choice that reads nothing the key decides.

Chosen on the seed-0 clones of configs/insiders.yaml (docs/divqat.md, "A mark on every answer"):
probabilities, not ranks or log-probabilities, and the victim's component removed (13 of 14
marked clones at p < 1e-6 from the first 1,000 images, against 1 of 14 for the runner-up match
test and 8 of 14 without the removal); then the 1,000 of the most mass instead of the first
(14 of 14; the sum of -log10 p 295 against 130; by entropy 14 of 14, 255; from records of
5,000 or 10,000 codes 13 of 14, 432 and 443: the record stays at 2,000). Against a thief that
keeps only its confident answers (it carries the order only on those), a candidate - the rows
of most mass from each half of the record by the top-1's probability, the smallest of the
halves' and both's p-values times 3 (`strata=2`, `stratified_p_value`) - won on
configs/order_validation.yaml (15 of 18 clones against 13) but netted nothing on the evaluation
grids (one confidence-filter clone more, one random-sampling clone fewer, weaker p-values on
the plain thieves: benchmarks/order_rows.py, docs/divqat.md), so it is not the default.
"""

import math

import torch
from torch import Tensor


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
    suspect, natural, served = suspect.double(), natural.double(), served.double()
    n, k = served.shape
    top = served.argmax(-1)
    rest = torch.ones(n, k, dtype=torch.bool)
    rest[torch.arange(n), top] = False

    def centred(x: Tensor) -> Tensor:
        x = x[rest].view(n, k - 1)
        return x - x.mean(1, keepdim=True)

    a, v, b = centred(suspect), centred(natural), centred(served)
    unit = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    a = a - (a * unit).sum(1, keepdim=True) * unit
    norms = a.norm(dim=1) * b.norm(dim=1)
    untied = served[rest].view(n, k - 1).max(1).values < served.max(1).values
    usable = untied & (norms > 1e-12)
    return (a * b).sum(1)[usable] / norms[usable]


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
