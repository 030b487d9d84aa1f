"""What every attack shares: its config, the thief's knowledge, and surrogate training.

The thief knows the input shape and the number of classes (the API's output length), its own
query pool, and nothing else; it trains its surrogate with the same loop as the victims.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from divqat.data import ImageSet
from divqat.data.augment import random_affine
from divqat.data.pools import POOLS
from divqat.device import default_device
from divqat.errors import DivqatError
from divqat.models import create_model
from divqat.registry import Registry
from divqat.train import TrainConfig, cross_entropy, fit

LABEL_MODES = ("soft", "hard")
CONFIDENCE_MODES = ("drop", "weight")


@dataclass(frozen=True)
class AttackConfig:
    """One theft. Past the basics, the ways a thief adapts to a training-time defense:
    `labels="hard"` (top-1 only), `confidence_tau` (drop, or down-weight to max prob / tau, the
    answers whose max probability is below tau), `smoothing` (query each image as k augmented
    copies and train on the mean answer; every copy is a query) and `in_seeds` (that many images
    of the thief's in-distribution split mixed into the pool). `augment` trains the surrogate
    on randomly shifted, rotated and scaled views of its queries (the answers kept)."""

    attack: str = "knockoff"
    pool: str = "ood"
    budget: int = 10_000
    labels: str = "soft"  # soft: the victim's probabilities; hard: only its top-1 label
    surrogate: str = "lenet5"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    augment: bool = False
    confidence_tau: float = 0.0
    confidence_mode: str = "drop"
    smoothing: int = 1
    in_seeds: int = 0

    def __post_init__(self):
        if self.budget <= 0:
            raise DivqatError(f"budget must be a positive number of queries, got {self.budget}")
        if self.labels not in LABEL_MODES:
            raise DivqatError(f"labels must be one of {', '.join(LABEL_MODES)}, got {self.labels!r}")
        if self.pool not in POOLS:
            raise DivqatError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.epochs < 1:
            raise DivqatError("epochs must be >= 1")
        if not 0 <= self.confidence_tau < 1:
            raise DivqatError(f"confidence_tau must be in [0, 1), got {self.confidence_tau}")
        if self.confidence_mode not in CONFIDENCE_MODES:
            raise DivqatError(f"confidence_mode must be one of {', '.join(CONFIDENCE_MODES)}")
        if self.smoothing < 1 or self.in_seeds < 0:
            raise DivqatError("smoothing must be >= 1 and in_seeds >= 0")


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

    def query(self, victim, images: Tensor) -> Tensor:
        """The victim's answers to `images`, in batches; with smoothing k, each image is asked as
        k augmented copies (k queries) and its answer is their mean."""
        k = self.config.smoothing
        if k == 1:
            return torch.cat([victim.query(batch) for batch in images.split(512)])
        answers = []
        for batch in images.split(max(1, 512 // k)):
            copies = random_affine(batch.repeat_interleave(k, 0), self.generator)
            answers.append(victim.query(copies).view(len(batch), k, -1).mean(1))
        return torch.cat(answers)

    def training_data(self, inputs: Tensor, probs: Tensor) -> dict[str, Tensor]:
        """Inputs, targets and (confidence-aware thief) weights: answers less confident than tau
        are dropped, or weighted by max prob / tau."""
        data = {"inputs": inputs, "targets": self.targets(probs)}
        tau = self.config.confidence_tau
        if tau:
            confidence = probs.max(-1).values
            if self.config.confidence_mode == "weight":
                data["weights"] = (confidence / tau).clamp_max(1.0)
            else:
                keep = confidence >= tau
                if keep.sum() < 1:
                    raise DivqatError(f"no answer is at least {tau} confident: nothing to train on")
                data = {k: v[keep] for k, v in data.items()}
        return data

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
        run = TrainConfig(epochs or c.epochs, c.batch_size, c.lr, seed=c.seed, channels_last=True)
        augment = self.augmentation() if c.augment else None
        data = self.training_data(inputs, probs)
        fit(model, data, cross_entropy, run, label="surrogate", quiet=self.quiet, transform=augment)
        return model.cpu()

    def augmentation(self):
        """Random affine views of each training batch, drawn from the thief's own generator."""
        g = torch.Generator().manual_seed(self.config.seed + 1)
        return lambda images: random_affine(images.cpu(), g).to(images.device)


ATTACKS = Registry("attack")  # name -> attack(victim, thief) -> trained surrogate
register_attack = ATTACKS.register
get_attack = ATTACKS.lookup
