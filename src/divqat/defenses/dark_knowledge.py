"""Answers without dark knowledge: the top-`keep` classes and their probabilities exact, the rest
of the mass told in a way that teaches a thief nothing about how the victim ranks them.

A thief holding images of the task learns most from the soft answers to them (docs/divqat.md,
"Thieves who hold in-distribution images"): the victim's ranking of the wrong classes. Both
defenses keep what a benign client reads off an answer - the top-1 class and its probability,
hence accuracy and calibration (expected calibration error) exactly - and remove the ranking:

- `flatten`: the remaining mass shared equally by the other classes (no secret needed);
- `scramble`: the other classes' probabilities permuted among them, the permutation drawn from
  the image's keyed coarse code (defenses/keyed.py): the same picture gets the same answer from
  any key, after any restart, so asking again reveals nothing; a thief learns a confident,
  consistent and wrong ranking. `per="class"` draws one permutation of the other classes per
  top-1 class instead (keep 1 only): every image the victim calls class c has its other
  classes' probabilities relabelled the same way: a rule, not image by image, which a model
  trained again on a clone's answers learns again. Behind it every soft clone of the evaluation
  thieves distilled again into LeNet-5 as answered was proven (6 of 6; per image 3 of 6), 2 of
  the 3 within 5 pp distilled on random views (per image 0), at a weaker but still tiny
  watermark p (docs/divqat.md, "An order per class"): the recipe for up to 10 classes, which
  its exact test enumerates ((K - 1)! permutations). Off by default: the per-image order has no
  limit on the classes, and a thief comparing many answers with a model of its own can see a
  per-class one.

What they cost: every probability past the top `keep` (a benign client's top-2 is no longer
the victim's). Hand-computed: [0.6, 0.3, 0.1, 0.0] under flatten (keep 1) is
[0.6, 0.1333, 0.1333, 0.1333].

`confidence_step` (0: off) tells the top-1's probability coarsely too: its log-odds rounded to
a multiple of the step (in nats), the other classes rescaled to the rest of the mass, so a
thief reads how sure the victim is only to within a factor e^step of odds. Rounding to the
nearest level keeps calibration close (measured: docs/divqat.md); a row where rounding would
tie or pass the top-1 keeps its exact probability. Hand-computed: step 2, [0.6, 0.3, 0.1]:
log-odds 0.405 rounds to 0, so [0.5, 0.375, 0.125].
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from divqat.defenses.keyed import ImageKey
from divqat.defenses.orders import PERS
from divqat.defenses.registry import Defense, check_range, register_defense
from divqat.errors import DivqatError


def below_top(probs: Tensor, keep: int) -> Tensor:
    """Per row, the indices of the classes past the top `keep`, in descending probability."""
    return probs.argsort(dim=-1, descending=True, stable=True)[:, keep:]


def coarse_confidence(probs: Tensor, step: float) -> Tensor:
    """The answers with the top-1's log-odds rounded to a multiple of `step`, the other classes
    rescaled in proportion; 0: the answers as they are."""
    if not step:
        return probs
    p = probs.double()
    top = p.argmax(-1, keepdim=True)
    p_top = p.gather(1, top)
    rest = 1 - p_top
    logit = torch.log(p_top) - torch.log(rest)  # +inf where the top holds everything: kept, 1 - told = 0
    told = torch.where(torch.isfinite(logit), torch.sigmoid(step * torch.round(logit / step)), p_top)
    out = (p.scatter(1, top, 0.0) * (1 - told) / rest.clamp_min(1e-300)).scatter(1, top, told)
    second = out.scatter(1, top, -1.0).max(-1, keepdim=True).values
    lost = (second >= told - 1e-6).squeeze(1)  # rounding down would tie the top-1 (within float32) or pass it
    out[lost] = p[lost]
    return out.to(probs.dtype)


@register_defense("flatten")
@dataclass
class Flatten(Defense):
    keep: int = 1
    confidence_step: float = 0.0
    keeps_argmax = True

    def __post_init__(self):
        check_range(self, "keep", 1, 10_000)
        check_range(self, "confidence_step", 0.0, 20.0)

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        probs = coarse_confidence(probs, self.confidence_step)
        keep = min(self.keep, probs.shape[-1])
        if keep == probs.shape[-1]:
            return probs
        rest = below_top(probs, keep)
        share = (probs.gather(1, rest).sum(1, keepdim=True) / rest.shape[1]).expand_as(rest)
        return probs.clone().scatter_(1, rest, share)


@register_defense("scramble")
@dataclass
class Scramble(Defense):
    keep: int = 1
    secret_file: str = ""
    confidence_step: float = 0.0
    per: str = "image"  # "class": one keyed permutation per top-1 class
    keeps_argmax = True
    uses_images = True  # the permutation is keyed by the image's coarse form
    _key: ImageKey | None = field(init=False, repr=False, default=None)

    def __post_init__(self):
        check_range(self, "keep", 1, 10_000)
        check_range(self, "confidence_step", 0.0, 20.0)
        if self.per not in PERS:
            raise DivqatError(f"defense 'scramble': per must be {' or '.join(map(repr, PERS))}, got {self.per!r}")
        if self.per == "class" and self.keep != 1:
            raise DivqatError("defense 'scramble': per='class' permutes every class but the top-1 (keep 1)")
        self._key = ImageKey(self.secret_file, self.name)

    def fingerprint(self) -> str:
        return self._key.fingerprint(b"divqat scramble id")

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        return self.answer(probs, images)[0]

    def answer(self, probs: Tensor, images: Tensor) -> tuple[Tensor, list[str]]:
        """The scrambled answers and the names of the images' codes (what a record keys them by)."""
        digests = self._key.digests(images)
        names = [ImageKey.name(d) for d in digests]
        probs = coarse_confidence(probs, self.confidence_step)
        keep = min(self.keep, probs.shape[-1])
        if keep == probs.shape[-1]:
            return probs, names
        if self.per == "class":
            return self.per_class(probs), names
        rest = below_top(probs, keep)
        shuffled = torch.stack([
            torch.from_numpy(np.random.default_rng(np.frombuffer(d, np.uint32)).permutation(rest.shape[1]))
            for d in digests
        ]).to(probs.device)  # fmt: skip
        # The class ranked i-th among the rest gets the probability of the one ranked shuffled[i]-th.
        values = probs.gather(1, rest).gather(1, shuffled)
        out = probs.clone().scatter_(1, rest, values)
        return untied(out, probs), names

    def per_class(self, probs: Tensor) -> Tensor:
        """Each image's other classes relabelled by its top-1 class's permutation
        (`class_sources`): class l is told the probability of class source[c, l]."""
        source = class_sources(self._key, probs.shape[-1]).to(probs.device)
        return untied(probs.gather(1, source[probs.argmax(-1)]), probs)


def class_sources(key: ImageKey, classes: int) -> Tensor:
    """(K, K): row c maps each class to the one whose probability it is told when the top-1 is c
    - c to itself, the other K - 1 by a permutation drawn from an HMAC of c under the secret."""
    rows = []
    for c in range(classes):
        others = torch.tensor([k for k in range(classes) if k != c])
        seed = np.frombuffer(key.digest(f"scramble class {c} of {classes}".encode()), np.uint32)
        row = torch.arange(classes)
        row[others] = others[torch.from_numpy(np.random.default_rng(seed).permutation(classes - 1))]
        rows.append(row)
    return torch.stack(rows)


def untied(out: Tensor, probs: Tensor) -> Tensor:
    """`out`, but the victim's own answer on rows where a class tied with the top-1 moved before it."""
    tied = out.argmax(-1) != probs.argmax(-1)
    out[tied] = probs[tied]
    return out
