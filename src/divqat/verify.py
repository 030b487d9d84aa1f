"""Proof of theft: ask a suspect model the watermarked images an account was told, and test
whether it answers the marks more often than a model that never saw them could.

For each watermarked image i the record holds the victim's own top-1 v_i and the mark m_i it
answered instead (defenses/watermark.py). Given v_i, m_i is uniform over the other K - 1 classes
and, keyed by a secret, independent of any model that never saw the watermarked answers. So for an
innocent suspect whose top-1 s_i differs from v_i, P(s_i = m_i) = 1 / (K - 1) exactly, and where
s_i = v_i a match is impossible: under the null hypothesis the number of matches is
Binomial(n, 1 / (K - 1)), n the images where the suspect disagrees with the victim. The p-value is
that binomial's exact upper tail (scipy.stats.binom); a verdict is p < significance / accounts
(Bonferroni over the accounts tested). The innocent rate reported is the matches an innocent
model would make per image asked, n / (asked * (K - 1)), estimated from the suspect's own
disagreements.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from scipy.stats import binom
from torch import Tensor

from divqat.defenses.watermark import Record
from divqat.errors import DivqatError

Suspect = Callable[[Tensor], Tensor]  # images -> probabilities (N, K)


@dataclass(frozen=True)
class Verdict:
    account: str
    asked: int  # the suspect's queries spent on this account
    matches: int  # top-1 answers equal to the mark
    disagreements: int  # top-1 answers other than the victim's own
    innocent_rate: float  # matches per image asked that an innocent model would make
    p_value: float
    stolen: bool


def verify(
    suspect: Suspect,
    records: dict[str, Record],
    *,
    significance: float = 1e-6,
    max_queries: int = 1000,
    batch_size: int = 256,
) -> dict:
    """Verify a suspect against each account's record, spending at most `max_queries` of the
    suspect's queries in all (shared evenly between the accounts, the first images of each)."""
    if not 0 < significance < 1:
        raise DivqatError(f"significance must be in (0, 1), got {significance}")
    if max_queries < 1:
        raise DivqatError(f"max_queries must be >= 1, got {max_queries}")
    usable = {name: r for name, r in records.items() if len(r)}
    if not usable:
        raise DivqatError("no watermarked answers in the record: nothing to verify against")
    share = max(1, max_queries // len(usable))
    threshold = significance / len(usable)
    verdicts, spent = [], 0
    for name, record in usable.items():
        t = record.tensors()
        n = min(share, len(record), max_queries - spent)
        if n < 1:
            break
        images, top1, mark = t["images"][:n], t["top1"][:n], t["mark"][:n]
        answers = torch.cat([check_answers(suspect(b), len(b), int(max(mark.max(), top1.max())) + 1)
                             for b in images.split(batch_size)])  # fmt: skip
        spent += n
        guess = answers.argmax(-1)
        classes = answers.shape[1]
        matches = int((guess == mark).sum())
        disagreements = int((guess != top1).sum())
        p = float(binom.sf(matches - 1, disagreements, 1 / (classes - 1))) if matches else 1.0
        rate = disagreements / (n * (classes - 1))
        verdicts.append(Verdict(name, n, matches, disagreements, rate, p, p < threshold))
    return {
        "significance": significance,
        "per_account_threshold": threshold,
        "queries": spent,
        "accounts": [asdict(v) for v in verdicts],
    }


def check_answers(answers, n: int, classes_at_least: int) -> Tensor:
    """A suspect's answers as (n, K) scores, or a one-line error saying what it answered."""
    answers = torch.as_tensor(answers)
    if answers.ndim != 2 or len(answers) != n:
        raise DivqatError(f"the suspect is not a classifier: it answered shape {tuple(answers.shape)} for {n} images")
    if answers.shape[1] < max(classes_at_least, 2):
        raise DivqatError(f"the suspect answers {answers.shape[1]} classes; the record has {classes_at_least}")
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
    def answer(images: Tensor) -> Tensor:
        inputs = model.session.get_inputs()[0]
        expected = tuple(inputs.shape[1:])
        if all(isinstance(d, int) for d in expected) and expected != tuple(images.shape[1:]):
            raise DivqatError(
                f"{name} takes inputs of shape (N, {expected}), the record holds {tuple(images.shape[1:])}"
            )
        try:
            return model.predict_proba(images.contiguous())
        except Exception as e:  # onnxruntime's own error types
            raise DivqatError(f"{name}: cannot run the suspect ({str(e).splitlines()[0][:200]})") from None

    return answer
