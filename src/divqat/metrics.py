"""Metrics on probability vectors."""

import torch
from torch import Tensor


def accuracy(probs: Tensor, labels: Tensor) -> float:
    return (probs.argmax(-1) == labels).float().mean().item()


def agreement(a: Tensor, b: Tensor) -> float:
    """Fraction of rows where two models' top-1 classes agree (fidelity)."""
    return (a.argmax(-1) == b.argmax(-1)).float().mean().item()


def mean_kl(p: Tensor, q: Tensor, eps: float = 1e-12) -> float:
    """Mean over rows of KL(p || q); q is floored at eps so a deployed zero stays finite."""
    p, q = p.double(), q.double().clamp_min(eps)
    return (torch.special.xlogy(p, p) - p * q.log()).sum(-1).mean().item()


def mean_max_prob(probs: Tensor) -> float:
    return probs.max(-1).values.mean().item()


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE (Guo et al., 2017): answers grouped by top-1 probability into `bins` equal-width bins
    on (0, 1]; the mean over answers of |accuracy - mean confidence| of their bin."""
    confidence, predicted = probs.double().max(-1)
    correct = (predicted == labels).double()
    which = (confidence * bins).ceil().clamp(1, bins).long() - 1  # (0, 1/bins] is bin 0
    total = 0.0
    for b in which.unique():
        members = which == b
        total += members.sum().item() * abs(correct[members].mean().item() - confidence[members].mean().item())
    return total / len(labels)
