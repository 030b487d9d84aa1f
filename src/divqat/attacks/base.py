"""What every attack shares: its config, the thief's knowledge, and surrogate training.

The thief knows the input shape and the number of classes (the API's output length), its own
query pool, and nothing else; it trains its surrogate with the same loop as the victims.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from divqat.data import ImageSet
from divqat.device import default_device
from divqat.errors import DivqatError
from divqat.models import create_model
from divqat.registry import Registry
from divqat.train import TrainConfig, cross_entropy, fit

LABEL_MODES = ("soft", "hard")
POOLS = ("in", "ood", "mixed")


@dataclass(frozen=True)
class AttackConfig:
    attack: str = "knockoff"
    pool: str = "ood"
    budget: int = 10_000
    labels: str = "soft"  # soft: the victim's probabilities; hard: only its top-1 label
    surrogate: str = "lenet5"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.budget <= 0:
            raise DivqatError(f"budget must be a positive number of queries, got {self.budget}")
        if self.labels not in LABEL_MODES:
            raise DivqatError(f"labels must be one of {', '.join(LABEL_MODES)}, got {self.labels!r}")
        if self.pool not in POOLS:
            raise DivqatError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.epochs < 1:
            raise DivqatError("epochs must be >= 1")


@dataclass
class Thief:
    config: AttackConfig
    pool: ImageSet | None  # None for data-free attacks
    input_shape: tuple[int, int, int]
    num_classes: int
    generator: torch.Generator
    quiet: bool = True

    def targets(self, probs: Tensor) -> Tensor:
        """What the thief trains on: the probabilities, or (hard) only their argmax."""
        return probs.argmax(-1) if self.config.labels == "hard" else probs

    def new_surrogate(self, inputs: Tensor) -> nn.Module:
        """A fresh surrogate, normalised by the statistics of the thief's own queries."""
        mean = inputs.mean(dim=(0, 2, 3)).tolist()
        std = inputs.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        return create_model(
            self.config.surrogate, num_classes=self.num_classes, input_shape=self.input_shape, mean=mean, std=std
        )

    def train_surrogate(self, inputs: Tensor, probs: Tensor, epochs: int | None = None, model=None) -> nn.Module:
        torch.manual_seed(self.config.seed)
        model = (model or self.new_surrogate(inputs)).to(default_device())
        c = self.config
        run = TrainConfig(epochs or c.epochs, c.batch_size, c.lr, seed=c.seed)
        fit(
            model,
            {"inputs": inputs, "targets": self.targets(probs)},
            cross_entropy,
            run,
            label="surrogate",
            quiet=self.quiet,
        )
        return model.cpu()


ATTACKS = Registry("attack")  # name -> attack(victim, thief) -> trained surrogate
register_attack = ATTACKS.register
get_attack = ATTACKS.lookup
