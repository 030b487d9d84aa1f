"""What every attack shares: the thief's knowledge, surrogate training, and the registry.

An attack is a registered dataclass of its own parameters (JBDA's step, DFME's learning
rates...) with `steal(victim, thief) -> surrogate`: `victim` is an `Oracle` (`query`,
`remaining` and nothing else), `thief` what the thief knows - its settings (an AttackConfig,
divqat/configs.py, whose `params` are the attack's parameters), the input shape and the number
of classes (the API's output length), its own query pool as unlabelled images, a generator, and
optionally a surrogate module of the user's own. It trains its surrogate with the same loop as
the victims. A plain function `attack(victim, thief, **params)` registers too: its keyword
parameters, typed by their defaults, become the attack's parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from divqat.data.augment import random_affine
from divqat.device import default_device
from divqat.errors import DivqatError
from divqat.models import create_model
from divqat.registry import Registry, typed_params
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
    surrogate: nn.Module | None = None  # the user's own (raw [0, 1] pixels in); else config.surrogate is built

    def targets(self, probs: Tensor) -> Tensor:
        """What the thief trains on: the probabilities, or (hard) only their argmax; with label
        smoothing eps, either mixed with the uniform answer: (1 - eps) target + eps / K."""
        eps = self.config.label_smoothing
        if self.config.labels == "hard":
            if not eps:
                return probs.argmax(-1)
            probs = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)
        return (1 - eps) * probs + eps / probs.shape[-1] if eps else probs

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
        """A fresh surrogate: a copy of the user's module as it was handed in (each call starts
        from its initial weights), or the config's architecture normalised by the statistics of
        the thief's own queries."""
        if self.surrogate is not None:
            return copy.deepcopy(self.surrogate)
        mean = inputs.mean(dim=(0, 2, 3)).tolist()
        std = inputs.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
        return create_model(
            self.config.surrogate, num_classes=self.num_classes, input_shape=self.input_shape, mean=mean, std=std
        )

    def train_surrogate(self, inputs: Tensor, probs: Tensor, epochs: int | None = None, model=None) -> nn.Module:
        torch.manual_seed(self.config.seed)
        model = (model or self.new_surrogate(inputs)).to(default_device())
        c = self.config
        run = TrainConfig(epochs or c.epochs, c.batch_size, c.lr, schedule=c.schedule, seed=c.seed, channels_last=True)
        augment = self.augmentation() if c.augment else None
        data = self.training_data(inputs, probs)
        fit(model, data, cross_entropy, run, label="surrogate", progress=self.progress, transform=augment)
        return model.cpu()

    def augmentation(self):
        """Random affine views of each training batch, drawn from the thief's own generator."""
        g = torch.Generator().manual_seed(self.config.seed + 1)
        return lambda images: random_affine(images.cpu(), g).to(images.device)


class Attack:
    """Base: subclasses are dataclasses of the attack's parameters and implement `steal`."""

    name = "none"

    def steal(self, victim, thief: Thief) -> nn.Module:
        raise NotImplementedError

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}


ATTACKS = Registry("attack")  # name -> Attack subclass


def register_attack(name: str):
    """Decorator over an Attack dataclass, or over a function `attack(victim, thief, **params)`."""

    def wrap(entry):
        cls = entry if isinstance(entry, type) else function_attack(entry)
        cls.name = name
        ATTACKS.register(name)(cls)
        return entry

    return wrap


def function_attack(function) -> type[Attack]:
    """An Attack dataclass whose fields are `function`'s keyword parameters (typed by their defaults)."""
    own = list(inspect.signature(function).parameters.values())[2:]
    if any(p.default is inspect.Parameter.empty for p in own):
        raise ValueError(f"attack {function.__name__}: every parameter past (victim, thief) needs a default")
    fields = [(p.name, type(p.default), dataclasses.field(default=p.default)) for p in own]
    cls = dataclasses.make_dataclass(function.__name__, fields, bases=(Attack,), frozen=True)
    cls.steal = lambda self, victim, thief: function(victim, thief, **self.params())
    cls.__doc__ = function.__doc__ or inspect.getmodule(function).__doc__
    return cls


def positive(attack: Attack, *names: str) -> None:
    for name in names:
        value = getattr(attack, name)
        if not value > 0:
            raise DivqatError(f"attack {attack.name!r}: {name} must be > 0, got {value}")


def create_attack(name: str, params: dict | None = None) -> Attack:
    """An attack from its name and parameters (strings from the CLI, or values)."""
    cls = ATTACKS.lookup(name)
    return cls(**typed_params(cls, params, f"attack {name!r}"))


def get_attack(name: str) -> type[Attack]:
    return ATTACKS.lookup(name)
