"""Divergences D(p || q) between the frozen teacher's probabilities p and the student's q.

Each takes p (B, K) and the student's log-probabilities log_q (B, K), both finite, and returns
one value per sample. p is a constant (no gradient flows to the teacher).
"""

import math

import torch
from torch import Tensor

from divqat.registry import Registry

# Floor for the teacher's probabilities where a log of them is needed (reverse KL).
TINY = 1e-12


def kl(p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) = sum p (log p - log q): the paper's choice; unbounded as q_k -> 0 where p_k > 0."""
    return (torch.special.xlogy(p, p) - p * log_q).sum(-1)


def reverse_kl(p: Tensor, log_q: Tensor) -> Tensor:
    """KL(q || p) = sum q (log q - log p): mode-seeking, bounded by -log(min p)."""
    q = log_q.exp()
    return (q * (log_q - p.clamp_min(TINY).log())).sum(-1)


def js(p: Tensor, log_q: Tensor) -> Tensor:
    """Jensen-Shannon: (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2; bounded by log 2."""
    q = log_q.exp()
    # log m from the logs: (p + q) / 2 underflows to 0 in float32 where p_k = 0 and log q_k < -103,
    # and log 0 would turn the sum into NaN. log p_k = -inf is harmless inside logaddexp.
    log_m = torch.logaddexp(p.log(), log_q) - math.log(2)
    return 0.5 * ((torch.special.xlogy(p, p) - p * log_m).sum(-1) + (q * (log_q - log_m)).sum(-1))


DIVERGENCES = Registry("divergence")
for _name, _fn in {"kl": kl, "reverse-kl": reverse_kl, "js": js}.items():
    DIVERGENCES.register(_name)(_fn)
get_divergence = DIVERGENCES.lookup


def drop_class(values: Tensor, labels: Tensor) -> Tensor:
    """(B, K) -> (B, K-1): each row without the column of its own label (order kept)."""
    keep = torch.ones_like(values, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), False)
    return values[keep].view(values.shape[0], values.shape[1] - 1)
