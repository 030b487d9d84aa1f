"""The classic output-truncation defenses: top-k, rounding and label-only. All keep the argmax."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from divqat.defenses.registry import Defense, check_range, register_defense, renormalize


@register_defense("top-k")
@dataclass
class TopK(Defense):
    """Keep the k largest probabilities, zero the rest, renormalise."""

    k: int = 1
    keeps_argmax = True

    def __post_init__(self):
        check_range(self, "k", 1, 10_000)

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        k = min(self.k, probs.shape[-1])
        top = probs.topk(k, dim=-1)
        return renormalize(torch.zeros_like(probs).scatter_(-1, top.indices, top.values))


@register_defense("rounding")
@dataclass
class Rounding(Defense):
    """Round each probability to `decimals` decimals, keeping the argmax: rounding can tie the
    top class with another (0.1028 and 0.0997 both become 0.10) or zero every class, so the
    winner is lifted one rounding step above the best other class before renormalising."""

    decimals: int = 2
    keeps_argmax = True

    def __post_init__(self):
        check_range(self, "decimals", 0, 10)

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        rounded = torch.round(probs.double(), decimals=self.decimals)
        winner = probs.argmax(-1, keepdim=True)
        others = rounded.scatter(-1, winner, -1.0).max(-1, keepdim=True).values
        # The step must also survive the cast back to float32 (at 10 decimals 1e-10 would not).
        step = max(10.0**-self.decimals, 4 * torch.finfo(probs.dtype).eps)
        lifted = torch.maximum(rounded.gather(-1, winner), others + step)
        return renormalize(rounded.scatter(-1, winner, lifted)).to(probs.dtype)


@register_defense("label-only")
@dataclass
class LabelOnly(Defense):
    """One-hot of each row's own argmax (row by row: never the batch's winners on every row)."""

    keeps_argmax = True

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        return F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)
