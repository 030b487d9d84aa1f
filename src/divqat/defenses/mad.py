"""MAD, prediction poisoning (Orekondy et al., ICLR 2020), with the argmax-preserving oracle.

MAD perturbs y to maximise the angle between the gradient an attacker's model f_A would take
from y~ and the one it would take from y. For f_A's last (linear) layer, the gradient of
-log softmax_k with respect to its weights and bias is (s - e_k) outer [h, 1] (s = softmax of
f_A, h its penultimate features), so G^T y = (s - y) outer [h, 1] and the objective
|| G^T y~/||G^T y~|| - G^T y/||G^T y|| ||^2 equals || (s - y~)/||s - y~|| - (s - y)/||s - y|| ||^2:
h drops out. This closed form scores all K one-hot targets of a whole batch at once, instead
of K backward passes per sample as in the original code.

y~ = (1 - a) y + a y*, a = clamp(epsilon / ||y - y*||_1, 0, 1); with keep_argmax, a is capped
just below the point where y*'s class would overtake y's top class.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from divqat.defenses.registry import Defense, answers_of, check_range, register_defense


def unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@register_defense("mad")
@dataclass
class MAD(Defense):
    needs_data = True  # fit trains a model of its own on the victim's training data
    uses_images = True
    epsilon: float = 0.5
    keep_argmax: bool = True
    surrogate_model: str = "lenet5"  # f_A: the defender's stand-in for the attacker's model
    surrogate_epochs: int = 1
    seed: int = 0
    surrogate: nn.Module | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        check_range(self, "epsilon", 0.0, 2.0)
        check_range(self, "surrogate_epochs", 0, 100)
        self.keeps_argmax = bool(self.keep_argmax)

    def fit(self, victim, splits) -> "MAD":
        from divqat.models import create_model  # training code, only when a defense is built
        from divqat.train.loop import TrainConfig, fit
        from divqat.train.losses import cross_entropy

        torch.manual_seed(self.seed)
        train = splits.victim_train
        mean, std = splits.channel_stats()
        model = create_model(
            self.surrogate_model, num_classes=splits.num_classes, input_shape=splits.input_shape, mean=mean, std=std
        )
        if self.surrogate_epochs:
            data = {"inputs": train.images, "targets": train.labels}
            fit(model, data, cross_entropy, TrainConfig(self.surrogate_epochs, seed=self.seed))
        self.surrogate = model
        return self

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        if self.epsilon == 0:
            return probs
        if self.surrogate is None:
            raise RuntimeError("MAD needs fit() before use")
        y = probs.double()
        s = answers_of(self.surrogate, images).double()
        k = y.shape[-1]
        targets = torch.eye(k, dtype=y.dtype)  # candidate y* = e_j, j = 0..K-1
        l1 = (y.unsqueeze(1) - targets).abs().sum(-1)  # (B, K)
        a = (self.epsilon / l1.clamp_min(1e-12)).clamp(0, 1)
        if self.keep_argmax:
            top = y.max(-1, keepdim=True).values
            gap = top - y  # (B, K); zero for the top class itself
            cap = torch.where(gap > 0, gap / (1 + gap) * (1 - 1e-6), torch.ones_like(gap))
            a = torch.minimum(a, cap)
        candidates = (1 - a).unsqueeze(-1) * y.unsqueeze(1) + a.unsqueeze(-1) * targets  # (B, K, K)
        score = (unit(s.unsqueeze(1) - candidates) - unit(s - y).unsqueeze(1)).pow(2).sum(-1)
        best = score.argmax(-1)
        out = candidates[torch.arange(len(y)), best]
        return (out / out.sum(-1, keepdim=True)).to(probs.dtype)
