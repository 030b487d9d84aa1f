"""Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017).

From a small seed set, alternate: train the surrogate; for every known point x add
x + step * sign(d surrogate_logit[victim's label] / dx) and query it. The set doubles each
round until the budget is spent. Defaults from prediction-poisoning: seed set 100, step 0.1,
20 epochs per round.
"""

from dataclasses import dataclass

import torch

from divqat.attacks.base import Attack, Thief, positive, register_attack
from divqat.blackbox.victim import Oracle
from divqat.train.loop import set_mode


def jacobian_step(surrogate, images: torch.Tensor, labels: torch.Tensor, step: float) -> torch.Tensor:
    set_mode(surrogate, train=False)
    out = []
    for x, y in zip(images.split(512), labels.split(512), strict=True):
        x = x.clone().requires_grad_(True)
        surrogate(x).gather(1, y.unsqueeze(1)).sum().backward()
        out.append((x + step * x.grad.sign()).clamp(0, 1).detach())
    return torch.cat(out)


@register_attack("jbda")
@dataclass(frozen=True)
class JBDA(Attack):
    seed_size: int = 100
    step: float = 0.1
    round_epochs: int = 20

    def __post_init__(self):
        positive(self, "seed_size", "step", "round_epochs")

    def steal(self, victim: Oracle, thief: Thief):
        pool, g = thief.pool, thief.generator
        inputs = pool[torch.randperm(len(pool), generator=g)[: min(self.seed_size, victim.remaining)]]
        answers = victim.query(inputs)
        while victim.remaining > 0:
            surrogate = thief.train_surrogate(inputs, answers, epochs=self.round_epochs)
            # Papernot's periodic step size: alternate the direction every round.
            sign = 1.0 if (len(inputs) // self.seed_size).bit_length() % 2 else -1.0
            new = jacobian_step(surrogate, inputs, answers.argmax(-1), sign * self.step)[: victim.remaining]
            inputs, answers = torch.cat([inputs, new]), torch.cat([answers, victim.query(new)])
        return thief.train_surrogate(inputs, answers)
