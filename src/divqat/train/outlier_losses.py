"""The outlier term M(f_q(x_out), f_fp(x_out)) of DivQAT: what the victim should answer where
thieves query. Each takes the student's logits on outliers and the frozen teacher's
probabilities on them, and returns one value per sample (to be minimised). All are bounded
below, so minimising them cannot run away.

- misinformation: -log(1 - q[argmax p]): little mass on the class the FP model would answer
  (Adaptive Misinformation's loss, Kariyappa & Qureshi 2020).
- shift: cross-entropy towards the FP model's answer with every class moved by K // 2 (a fixed
  derangement): a consistent, confident, wrong function.
- argmin: cross-entropy towards the FP model's least likely class, a confident one-hot answer:
  where `divergence` ends when it converges (JS and KL are largest there), reached directly.
- uniform: cross-entropy towards the uniform distribution (outlier exposure).
- divergence: -D(p || q), DivQAT's own divergence, maximised on outliers instead of the
  training images (over all classes: outliers have no true class).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from divqat.registry import Registry
from divqat.train.divergences import get_divergence

OUTLIER_LOSSES = Registry("outlier loss")
get_outlier_loss = OUTLIER_LOSSES.lookup

# q of the FP model's class is capped here in misinformation, which then stays below -log(1e-6).
MAX_PROBABILITY = 1 - 1e-6


@OUTLIER_LOSSES.register("misinformation")
def misinformation(logits: Tensor, teacher_probs: Tensor, divergence: str) -> Tensor:
    q = F.softmax(logits, -1).gather(1, teacher_probs.argmax(-1, keepdim=True)).squeeze(1)
    return -torch.log1p(-q.clamp_max(MAX_PROBABILITY))


def derangement(probs: Tensor) -> Tensor:
    """Class k's probability moved to class (k + K // 2) mod K: no class keeps its own."""
    return probs.roll(probs.shape[-1] // 2, dims=-1)


@OUTLIER_LOSSES.register("shift")
def shift(logits: Tensor, teacher_probs: Tensor, divergence: str) -> Tensor:
    return -(derangement(teacher_probs) * F.log_softmax(logits, -1)).sum(-1)


@OUTLIER_LOSSES.register("argmin")
def least_likely(logits: Tensor, teacher_probs: Tensor, divergence: str) -> Tensor:
    return F.cross_entropy(logits, teacher_probs.argmin(-1), reduction="none")


@OUTLIER_LOSSES.register("uniform")
def uniform(logits: Tensor, teacher_probs: Tensor, divergence: str) -> Tensor:
    return -F.log_softmax(logits, -1).mean(-1)


@OUTLIER_LOSSES.register("divergence")
def negative_divergence(logits: Tensor, teacher_probs: Tensor, divergence: str) -> Tensor:
    d = get_divergence(divergence)(teacher_probs, F.log_softmax(logits, -1))
    # KL has no upper bound: capped at log K, JS's own bound is log 2.
    return -d.clamp_max(math.log(logits.shape[-1]))
