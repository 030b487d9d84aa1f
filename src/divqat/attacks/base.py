"""What every attack shares: the thief's knowledge, and surrogate training.

An attack is `attack(victim, thief) -> surrogate`: `victim` is an `Oracle` (`query`, `remaining`
and nothing else), `thief` what the thief knows - its settings (an AttackConfig,
divqat/configs.py), the input shape and the number of classes (the API's output length), its
own query pool as unlabelled images, and a generator. It trains its surrogate with the same
loop as the victims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from divqat.data.augment import random_affine
from divqat.device import default_device
from divqat.errors import DivqatError
from divqat.models import create_model
from divqat.registry import Registry
from divqat.train.loop import Progress, TrainConfig, fit
from divqat.train.losses import cross_entropy

if TYPE_CHECKING:  # a type only: the config module checks attack names against this registry
    from divqat.configs import AttackConfig


@dataclass(frozen=True)
class Thief:
    config: AttackConfig
    pool: Tensor | None  # unlabelled images (float32 NCHW in [0, 1]); None for data-free attacks
    input_shape: tuple[int, int, int]
    num_classes: int
    generator: torch.Generator
    progress: Progress | None = None

    def targets(self, probs: Tensor) -> Tensor:
        """What the thief trains on: the probabilities, or (hard) only their argmax."""
        return probs.argmax(-1) if self.config.labels == "hard" else probs

    @property
    def queries_per_image(self) -> int:
        return self.config.smoothing * (2 if self.config.consistency_noise else 1)

    def query(self, victim, images: Tensor) -> Tensor:
        """The victim's answers to `images`, in batches; with smoothing k, each image is asked as
        k augmented copies (k queries) and its answer is their mean. With consistency_noise, each
        is asked again with noise (twice the queries) and an image whose two answers disagree on
        the top-1 is answered with NaN (dropped from training: `training_data`)."""
        answers = self.ask(victim, images)
        sigma = self.config.consistency_noise
        if not sigma:
            return answers
        noise = sigma * torch.randn(images.shape, generator=self.generator)
        again = self.ask(victim, (images + noise).clamp(0, 1))
        answers[answers.argmax(-1) != again.argmax(-1)] = float("nan")
        return answers

    def ask(self, victim, images: Tensor) -> Tensor:
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
        answered = ~probs.isnan().any(-1)  # NaN: dropped by the consistency check
        inputs, probs = inputs[answered], probs[answered]
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
        fit(model, data, cross_entropy, run, label="surrogate", progress=self.progress, transform=augment)
        return model.cpu()

    def augmentation(self):
        """Random affine views of each training batch, drawn from the thief's own generator."""
        g = torch.Generator().manual_seed(self.config.seed + 1)
        return lambda images: random_affine(images.cpu(), g).to(images.device)


ATTACKS = Registry("attack")  # name -> attack(victim: Oracle, thief: Thief) -> trained surrogate
register_attack = ATTACKS.register
get_attack = ATTACKS.lookup
