"""Adaptive misinformation (Kariyappa & Qureshi, CVPR 2020).

Answers the victim believes out of distribution (low top probability) are blended with those of
a misinformation model trained to put little mass on the true class (loss -log(1 - p_true)):
a = 1 / (1 + exp(nu (max y - tau))),  y~ = (1 - a) y + a softmax(f_mis(x)).
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divqat.defenses.registry import Defense, answers_of, check_range, register_defense


def misinformation_loss(logits: Tensor, batch: dict[str, Tensor], progress: float = 0.0) -> Tensor:
    p_true = F.softmax(logits, -1).gather(1, batch["targets"].unsqueeze(1)).squeeze(1)
    return -torch.log1p(-p_true.clamp_max(1 - 1e-6)).mean()


@register_defense("adaptive-misinformation")
@dataclass
class AdaptiveMisinformation(Defense):
    needs_data = True  # fit trains a model of its own on the victim's training data
    uses_images = True
    tau: float = 0.5
    nu: float = 1000.0
    model: str = "lenet5"
    epochs: int = 2
    seed: int = 0
    misinformation: nn.Module | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        check_range(self, "tau", 0.0, 1.0)
        check_range(self, "nu", 0.0, 1e6)
        check_range(self, "epochs", 0, 100)

    def fit(self, victim, splits) -> "AdaptiveMisinformation":
        from divqat.models import create_model  # training code, only when a defense is built
        from divqat.train.loop import TrainConfig, fit

        torch.manual_seed(self.seed)
        mean, std = splits.channel_stats()
        model = create_model(
            self.model, num_classes=splits.num_classes, input_shape=splits.input_shape, mean=mean, std=std
        )
        train = splits.victim_train
        data = {"inputs": train.images, "targets": train.labels}
        fit(model, data, misinformation_loss, TrainConfig(max(self.epochs, 1), seed=self.seed))
        self.misinformation = model
        return self

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        if self.misinformation is None:
            raise RuntimeError("adaptive misinformation needs fit() before use")
        a = torch.sigmoid(-self.nu * (probs.max(-1, keepdim=True).values - self.tau))
        return (1 - a) * probs + a * answers_of(self.misinformation, images)
