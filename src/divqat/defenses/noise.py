"""Random noise in logit space, scaled to an L2 norm of epsilon, then renormalised by softmax."""

from dataclasses import dataclass, field

import torch
from torch import Tensor

from divqat.defenses.registry import Defense, check_range, register_defense


@register_defense("random-noise")
@dataclass
class RandomNoise(Defense):
    epsilon: float = 0.5
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self):
        check_range(self, "epsilon", 0.0, 1000.0)
        self.generator = torch.Generator().manual_seed(self.seed)

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        if self.epsilon == 0:
            return probs
        noise = torch.randn(probs.shape, generator=self.generator, dtype=torch.float64)
        noise = self.epsilon * noise / noise.norm(dim=-1, keepdim=True)
        return torch.softmax(probs.double().clamp_min(1e-30).log() + noise, -1).to(probs.dtype)
