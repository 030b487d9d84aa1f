"""Proof of theft: ask a suspect model the watermarked images an account was told, and test
whether it favours the marks more than a model that never saw them could (and, behind
`scramble`, whether it orders the classes as the account was told: divqat/verify_order.py).

For each watermarked image i the record holds the victim's own top-1 v_i and the mark m_i it
answered instead, and the victim's own answer (defenses/watermark.py). Given v_i, m_i is uniform
over the other K - 1 classes and, keyed by a secret, independent of any model that never saw the
watermarked answers. So any score of the K - 1 classes other than v_i that the suspect's answer
(and the victim's own) decides puts m_i's score uniformly on those K - 1 values for an innocent
suspect, whatever the suspect is, independently across images: the sum of the marks' scores has
an exact null distribution, their convolution (`score_sum_p_value`), which gives the p-value.
The score (`mark_scores`): the suspect's log-probabilities of the K - 1 classes, less their
least-squares fit on the victim's own (what any model of the task shares with the victim only
adds noise), as z-scores within the image, each image's weighted by the confidence its mark was
served with - the record's `confidence`: the victim's own top probability, which the swap gives
the mark, or more where the watermark lifts it (`mark_probability`) (a mark served unsure is
learned less, and a confidence-filtering thief drops it; the weight reads only what the victim
served, so the null stays exact) - rounded to 0.02. Chosen on the validation pool's
thieves (benchmarks/mark_rules.py): the unweighted z-score first (12 of 12 clones against the
rank sum's 11, which it replaced; then 48 of 48 evaluation clones against 41), then the weight
(24 of 24 validation clones, confidence-filtering thieves included, against the unweighted's
22; then 46 of 48 fresh evaluation clones against 43 and the rank sum's 34): docs/divqat.md,
"Which statistic the watermark's test sums". A clone shares its victim's runner-up, which a
rank of the raw scores reads as noise, and a z-score weighs a clearly held mark more. A top-1 match
is reported too, with the rate an innocent model would have (1 / (K - 1) of the images where it
disagrees with the victim), and the marks' mean rank. A verdict is p < significance / tests
(Bonferroni over the tests made).
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from hashlib import blake2b

import numpy as np
import torch
from torch import Tensor

from divqat import verify_order
from divqat.defenses.orders import Orders
from divqat.defenses.watermark import Record, pooled
from divqat.errors import DivqatError

Suspect = Callable[[Tensor], Tensor]  # images -> probabilities (N, K)
POOLED = "all these accounts together"  # the account of `verify(..., together=True)`'s pooled entries


@dataclass(frozen=True)
class Verdict:
    account: str
    asked: int  # images of the record read (each sent to the suspect once per verification: Asked)
    matches: int  # top-1 answers equal to the mark
    disagreements: int  # top-1 answers other than the victim's own
    innocent_rate: float  # top-1 matches per image asked that an innocent model would make
    mean_rank: float  # of the mark among the K - 1 classes other than the victim's (0: first)
    innocent_mean_rank: float  # (K - 2) / 2
    p_value: float  # exact, of the sum of the marks' scores (mark_scores)
    stolen: bool
    test: str = "watermark"


@dataclass(frozen=True)
class OrderVerdict:
    account: str
    asked: int  # images of the orders read (each sent to the suspect once per verification: Asked)
    counted: int  # images that carry evidence (served runner-up not tied with the top-1)
    matches: int  # the suspect's runner-up is the served one
    innocent_rate: float  # at most, of those matches, for a model that never saw the orders: 1 / (K - 1)
    mean_correlation: float  # of the suspect's and the served orders (0 for an innocent model)
    p_value: float  # 1 / the largest wealth of the sequential bet (Ville's inequality; divqat/verify_order.py)
    stolen: bool
    test: str = "order"


def verify(
    suspect: Suspect,
    records: dict[str, Record],
    *,
    significance: float = 1e-6,
    max_queries: int = 1000,
    batch_size: int = 256,
    together: bool = False,
) -> dict:
    """Verify a suspect against each account's record - its watermarked answers (the test of the
    marks' scores above) and its scrambled orders (divqat/verify_order.py), each a test of its own - spending
    at most `max_queries` of the suspect's queries in all (shared between the tests, what a small
    record leaves going to the others; the first watermarked images, the orders asked in rounds
    where the suspect shows them: verify_order.Sequential). Each image is sent once (`Asked`): a
    test reads the answers an earlier one asked for free, and its share buys images not sent yet.
    The verdict: p < significance / tests (Bonferroni).

    `together`: the accounts' records also tested as one (`watermark.pooled`; its entries'
    account: POOLED), first, with up to half the queries: a thief that spreads its queries over
    several keys leaves each too few marks to prove alone, but all it was told together as many as
    one key would hold. It proves that the suspect learned this server's answers, not which of the
    keys it used; pool the keys one client may hold (one signup, one address), not every key of a
    server - other clients' marks, never learned, dilute the test."""
    if not 0 < significance < 1:
        raise DivqatError(f"significance must be in (0, 1), got {significance}")
    if max_queries < 1:
        raise DivqatError(f"max_queries must be >= 1, got {max_queries}")
    if together and POOLED in records:
        raise DivqatError(f"an account is named {POOLED!r}, the name of the accounts tested together")
    told = [r for r in records.values() if r.told]
    first = {POOLED: pooled(told)} if together and len(told) > 1 else {}
    groups = [evidence(first), evidence(records)]
    if not groups[1]:
        raise DivqatError("no watermarked answers or scrambled orders in the record: nothing to verify against")
    tests = groups[0] + groups[1]
    threshold = significance / len(tests)
    asked = Asked(suspect, batch_size)
    keys = [asked.keys(record.images) for _, _, record in tests]
    verdicts = []
    for i, (name, test, record) in enumerate(tests):
        pool = i < len(groups[0])  # the pooled tests: up to half the queries; the accounts' tests: what is left
        later = range(i, len(groups[0]) if pool else len(tests))
        left = (max_queries // 2 if pool else max_queries) - asked.charged
        n = shares([asked.fresh(keys[j]) for j in later], left)[0]  # new queries; images planned before are free
        if test == "order":  # per image: in rounds (verify_order.Sequential); per class: exact (class_test)
            every = n >= asked.fresh(keys[i])  # all of the record's rows affordable
            n = len(keys[i]) if every else n
            if n < 1:
                continue
            t = record.tensors()
            classes = t["served"].shape[1]
            ask = asked.rows(t["images"], keys[i], classes)
            if record.per == "class":
                result = verify_order.class_test(ask, t, n)
                asked.plan([keys[i][j] for j in result.rows.tolist()])  # chosen by the served top-1 alone
            else:
                result = verify_order.sequential_test(ask, t, n)
                if every:
                    asked.plan(keys[i])
                else:  # which rows its rounds read followed its answers: charged, never planned
                    asked.charge(n)
            verdicts.append(asdict(order_verdict(name, result, t, classes, threshold)))
            continue
        rows = asked.prefix(keys[i], n)
        if rows < 1:
            continue
        asked.plan(keys[i][:rows])
        t = record.tensors()
        classes = record.classes or int(max(t["mark"].max(), t["top1"].max())) + 1
        answers = asked.rows(t["images"], keys[i], classes)(torch.arange(rows))
        verdicts.append(asdict(watermark_verdict(name, answers, t, classes, threshold)))
    return {"significance": significance, "per_account_threshold": threshold, "queries": asked.queries,
            "accounts": verdicts}  # fmt: skip


def evidence(records: dict[str, Record]) -> list[tuple[str, str, Record | Orders]]:
    """(account, test, rows) for each test the records hold: the watermark's, then the orders'."""
    tests = [(name, "watermark", r) for name, r in records.items() if len(r)]
    return tests + [(name, "order", r.orders) for name, r in records.items() if len(r.orders)]


class Asked:
    """The suspect's answers so far, by image: each image is sent once, and the tests of one
    verification share its answers - the pooled test's rows are each account's first, and an image
    can hold a mark and an order. `queries`: the images sent.

    What a test may spend is counted by `planned`: images whose asking no answer decided (a
    watermark test's first rows, a per-class order test's rows, every row of a record read whole)
    are free to the tests after it; a sequential order test that reads part of its record is
    charged its whole share, its rows left unplanned (its rounds follow its answers, and a later
    test's share must not). So the rows each test reads are chosen before, and apart from, the
    answers it bets on, each test stays exact, and `charged` >= the images sent."""

    def __init__(self, suspect: Suspect, batch_size: int):
        self.suspect, self.batch_size = suspect, batch_size
        self.answers: dict[bytes, Tensor] = {}
        self.planned: set[bytes] = set()
        self.charged = 0

    @property
    def queries(self) -> int:
        return len(self.answers)

    @staticmethod
    def keys(images) -> list[bytes]:
        """A digest of each image, its shape included (the images themselves need not be kept twice)."""
        return [blake2b(f"{tuple(x.shape)}".encode() + x.contiguous().numpy().tobytes(), digest_size=16).digest()
                for x in images]  # fmt: skip

    def fresh(self, keys: list[bytes]) -> int:
        """How many of these images are not planned yet."""
        return sum(k not in self.planned for k in set(keys))

    def prefix(self, keys: list[bytes], n: int) -> int:
        """The most first rows whose images include at most `n` not planned yet."""
        unplanned = torch.tensor([k not in self.planned for k in keys], dtype=torch.long)
        return int((unplanned.cumsum(0) <= n).sum())

    def plan(self, keys: list[bytes]) -> None:
        new = set(keys) - self.planned
        self.planned |= new
        self.charged += len(new)

    def charge(self, n: int) -> None:
        self.charged += n

    def rows(self, images: Tensor, keys: list[bytes], classes: int) -> Callable[[Tensor], Tensor]:
        """Rows of a record (its images and their `keys`) -> the suspect's checked answers on their
        images (those not sent yet sent in batches, each once)."""

        def ask(rows: Tensor) -> Tensor:
            chosen = [keys[j] for j in rows.tolist()]
            first = {}
            for j, k in zip(rows.tolist(), chosen, strict=True):
                first.setdefault(k, j)
            unsent = torch.tensor([j for k, j in first.items() if k not in self.answers], dtype=torch.long)
            for batch in unsent.split(self.batch_size) if len(unsent) else ():
                got = check_answers(self.suspect(images[batch]), len(batch), classes)
                self.answers.update(zip((keys[j] for j in batch.tolist()), got, strict=True))
            answers = torch.stack([self.answers[k] for k in chosen]) if chosen else torch.zeros(0, classes)
            return check_answers(answers, len(chosen), classes)  # answers sent for a record of another victim too

        return ask


def shares(sizes: list[int], budget: int) -> list[int]:
    """Queries per test, water-filled: the smaller records first, each at most an even share of
    what is left, so that a test with few rows (a watermark's) leaves its unused share to the others."""
    out, left = [0] * len(sizes), budget
    for remaining, i in zip(range(len(sizes), 0, -1), sorted(range(len(sizes)), key=lambda i: sizes[i]), strict=True):
        out[i] = min(sizes[i], left // remaining)
        left -= out[i]
    for i, size in enumerate(sizes):  # fewer queries than tests: the first ones get what is left
        extra = min(size - out[i], left)
        out[i], left = out[i] + extra, left - extra
    return out


def watermark_verdict(name: str, answers: Tensor, told: dict[str, Tensor], classes: int, threshold: float) -> Verdict:
    n = len(answers)
    top1, mark = told["top1"][:n], told["mark"][:n]
    guess = answers.argmax(-1)
    matches = int((guess == mark).sum())
    disagreements = int((guess != top1).sum())
    ranks = mark_ranks(answers, top1, mark)
    natural = told["natural"][:n] if "natural" in told else None
    confidence = told["confidence"][:n] if "confidence" in told else None
    p = score_sum_p_value(mark_scores(answers, natural, top1, confidence), top1, mark, SCORE_STEP)
    rate = disagreements / (n * (classes - 1))
    mean = float(ranks.float().mean())
    return Verdict(name, n, matches, disagreements, rate, mean, (classes - 2) / 2, p, p < threshold)


def order_verdict(name: str, result: verify_order.SequentialResult | verify_order.ClassResult,
                  told: dict[str, Tensor], classes: int, threshold: float) -> OrderVerdict:  # fmt: skip
    asked = told["served"][result.rows]
    if isinstance(result, verify_order.ClassResult):  # shown beside the test: the rows' own correlations
        r = verify_order.correlations(result.answers[result.usable], told["natural"][result.rows][result.usable],
                                      asked[result.usable])  # fmt: skip
    else:
        r = result.r[result.usable]
    matches = verify_order.runner_up_matches(result.answers, asked)
    mean = float(r.mean()) if len(r) else 0.0
    p = result.p_value
    return OrderVerdict(name, len(result.rows), len(r), matches, 1 / (classes - 1), mean, p, p < threshold)


def mark_ranks(scores: Tensor, top1: Tensor, mark: Tensor) -> Tensor:
    """Each mark's rank among the classes other than the victim's top-1, by the suspect's scores
    (descending; ties broken by class index, a fixed order independent of the marks)."""
    rows = torch.arange(len(scores))
    others = scores.clone().double()
    others[rows, top1] = -float("inf")  # out of the ranking (its own place: last)
    mine = others[rows, mark].unsqueeze(1)
    index = torch.arange(scores.shape[1]).unsqueeze(0)
    ahead = (others > mine) | ((others == mine) & (index < mark.unsqueeze(1)))
    ahead[rows, top1] = False
    return ahead.sum(1)


SCORE_STEP = 0.02  # the z-scores' grid: the statistic is the rounded sum, its null exact


def mark_scores(answers: Tensor, natural: Tensor | None, top1: Tensor, confidence: Tensor | None = None) -> Tensor:
    """(n, K): how much like a mark each class looks in the suspect's answer (`residual_z`),
    weighted by the confidence the mark was served with (`confidence`, the record's; without it
    the victim's own top probability, which the watermark's swap gives the mark; unweighted in
    records made before `natural` was kept): a thief learns a mark served unsure less, and a
    confidence filter drops it. The weight reads only what the victim served, never the suspect,
    so the null stays exact."""
    z = residual_z(answers, natural, top1)
    if confidence is not None:
        return z * confidence.double().unsqueeze(1)
    return z if natural is None else z * natural.double().max(1, keepdim=True).values


def residual_z(answers: Tensor, natural: Tensor | None, top1: Tensor) -> Tensor:
    """(n, K): each class's log-probability in the suspect's answer among the K - 1 classes other
    than the victim's top-1 (centred), less the least-squares fit on the victim's own
    log-probabilities (`natural`, when given), as a z-score within the image. The victim's top-1
    column is 0 and never read."""
    a, keep = log_residuals(answers, natural, top1)
    spread = ((a * a).sum(1, keepdim=True) / keep.sum(1, keepdim=True)).sqrt().clamp_min(1e-9)
    return a / spread


def log_residuals(answers: Tensor, natural: Tensor | None, top1: Tensor) -> tuple[Tensor, Tensor]:
    """(residuals (n, K), mask of the K - 1 classes other than the victim's top-1): the suspect's
    centred log-probabilities of those classes less their least-squares fit on the victim's own
    (`natural`, when given); 0 in the top-1's column."""
    rows = torch.arange(len(answers))
    keep = torch.ones(answers.shape, dtype=torch.bool)
    keep[rows, top1] = False

    def centred(p: Tensor) -> Tensor:
        x = torch.where(keep, p.double().clamp_min(1e-12).log(), 0.0)
        return torch.where(keep, x - x.sum(1, keepdim=True) / keep.sum(1, keepdim=True), 0.0)

    a = centred(answers)
    if natural is not None:
        b = centred(natural)
        a = a - (a * b).sum(1, keepdim=True) / (b * b).sum(1, keepdim=True).clamp_min(1e-12) * b
    return a, keep


def score_sum_p_value(scores: Tensor, top1: Tensor, mark: Tensor, step: float) -> float:
    """P(sum of the marks' scores >= the one observed) for a suspect that never saw the marks:
    each image's term uniform over its K - 1 scores of the classes other than the victim's top-1,
    independently. Exact for the scores rounded to multiples of `step` (the statistic is the
    rounded sum), by convolving the images' distributions. scores: (n, K), higher = more like the mark."""
    n, k = scores.shape
    rows = torch.arange(n)
    grid = torch.round(scores.double() / step).long()
    observed = int(grid[rows, mark].sum())
    keep = torch.ones(n, k, dtype=torch.bool)
    keep[rows, top1] = False
    others = grid[keep].view(n, k - 1)
    low = others.min(1).values
    distribution, floor = np.ones(1), 0
    for values, least in zip(others.numpy(), low.tolist(), strict=True):
        distribution = np.convolve(distribution, np.bincount(values - least) / (k - 1))
        floor += least
    return float(min(1.0, distribution[max(0, observed - floor) :].sum()))


def check_answers(answers, n: int, classes: int) -> Tensor:
    """A suspect's answers as (n, K) scores for the victim's K classes, or a one-line error
    saying what it answered (another number of classes would change the null: no p-value)."""
    answers = torch.as_tensor(answers)
    if answers.ndim != 2 or len(answers) != n:
        raise DivqatError(f"the suspect is not a classifier: it answered shape {tuple(answers.shape)} for {n} images")
    if answers.shape[1] != classes:
        raise DivqatError(f"the suspect answers {answers.shape[1]} classes; the victim has {classes}")
    if not torch.isfinite(answers).all():
        raise DivqatError("the suspect answered NaN or infinite scores")
    return answers.float()


def load_suspect(target: str, *, url: str | None = None, key: str | None = None) -> Suspect:
    """A suspect as images -> probabilities: an ONNX file, a divqat run directory, or (with `url`
    and `key`) a served model. Any error reaching or running it is a one-line DivqatError."""
    from pathlib import Path

    if url:
        from divqat.blackbox.http import HttpBackend

        if not key:
            raise DivqatError("a served suspect needs --suspect-key")
        return HttpBackend(url, key)
    path = Path(target)
    if path.is_dir():
        from divqat.artifacts import load_onnx

        model = load_onnx(path)
    elif path.is_file():
        from divqat.quant import OnnxModel

        model = OnnxModel(path)
    else:
        raise DivqatError(f"{target}: no such suspect (an ONNX file, a run directory, or --url)")
    return guarded(model, str(target))


def guarded(model, name: str) -> Suspect:
    expected = model.input_shape

    def answer(images: Tensor) -> Tensor:
        if all(isinstance(d, int) for d in expected) and expected != tuple(images.shape[1:]):
            raise DivqatError(
                f"{name} takes inputs of shape (N, {expected}), the record holds {tuple(images.shape[1:])}"
            )
        try:
            return model.predict_proba(images.contiguous())
        except Exception as e:  # onnxruntime's own error types
            raise DivqatError(f"{name}: cannot run the suspect ({str(e).splitlines()[0][:200]})") from None

    return answer
