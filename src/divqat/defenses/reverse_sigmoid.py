"""Reverse sigmoid (Lee et al., 2019) and DCP (the DivQAT authors' ICMLA'23 heuristic).

r = beta * (sigmoid(gamma * logit(y)) - 1/2);  y~ = (y - r) / sum(y - r).
Unlike some public code, y is clipped to [1e-9, 1 - 1e-9] (not <= 1 - 1e-12, which zeroes the
perturbation of every class with y >= 0.5) and y - r to [0, 1] before normalising.
DCP applies the same perturbation with weight a = 1 / (1 + exp(1000 (max y - beta))): only
(in effect) to answers whose top probability is below beta.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from divqat.defenses.registry import Defense, check_range, register_defense


def reverse_sigmoid_shift(probs: Tensor, beta: float, gamma: float) -> Tensor:
    y = probs.double().clamp(1e-9, 1 - 1e-9)
    return beta * (torch.sigmoid(gamma * torch.log(y / (1 - y))) - 0.5)


def subtract_and_normalize(probs: Tensor, shift: Tensor) -> Tensor:
    out = (probs.double() - shift).clamp(0, 1)
    total = out.sum(-1, keepdim=True)
    # Every class clipped to zero (very large beta): fall back to the one-hot of the answer.
    fallback = F.one_hot(probs.argmax(-1), probs.shape[-1]).double()
    return torch.where(total > 0, out / total.clamp_min(1e-300), fallback).to(probs.dtype)


@register_defense("reverse-sigmoid")
@dataclass
class ReverseSigmoid(Defense):
    beta: float = 0.1
    gamma: float = 0.2

    def __post_init__(self):
        check_range(self, "beta", 0.0, 100.0)
        check_range(self, "gamma", 0.0, 100.0)

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        return subtract_and_normalize(probs, reverse_sigmoid_shift(probs, self.beta, self.gamma))


@register_defense("dcp")
@dataclass
class DCP(Defense):
    beta: float = 0.8
    gamma: float = 0.2

    def __post_init__(self):
        check_range(self, "beta", 0.0, 1.0)
        check_range(self, "gamma", 0.0, 100.0)

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        weight = torch.sigmoid(-1000.0 * (probs.double().max(-1, keepdim=True).values - self.beta))
        return subtract_and_normalize(probs, weight * reverse_sigmoid_shift(probs, self.beta, self.gamma))
