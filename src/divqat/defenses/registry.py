"""The defense registry. A defense maps the victim's probabilities (and the queried images,
for defenses that look at them) to the probabilities the client receives.

Parameters are validated in __post_init__, so a bad value fails before any query is answered.
"""

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from divqat.errors import DivqatError
from divqat.registry import Registry, typed_params

DEFENSES = Registry("defense")


def register_defense(name: str):
    def wrap(cls):
        cls.name = name
        return DEFENSES.register(name)(cls)

    return wrap


class Defense:
    """Base: subclasses are dataclasses and implement `perturb`."""

    name = "none"
    keeps_argmax = False  # promised by the defense: the top-1 class is never changed
    needs_data = False  # `fit` trains on the victim's data (the splits) before the first answer
    uses_images = False  # `perturb` looks at the queried images, not only at the probabilities

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, probs: Tensor, images: Tensor) -> Tensor:
        return self.perturb(probs, images)

    def params(self) -> dict:
        """The defense's settings (not the models or generators it builds from them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def fit(self, victim: Callable[[Tensor], Tensor], splits) -> "Defense":
        """Defenses with a model of their own (MAD's surrogate, misinformation) train it here."""
        return self


def create_defense(name: str, params: dict[str, str | float] | None = None, seed: int | None = None) -> Defense:
    """A defense from its name and parameters given as strings (from the CLI) or numbers;
    `seed` seeds the defenses that draw random numbers or train a model, and is ignored by the rest."""
    cls = DEFENSES.lookup(name)
    kwargs = typed_params(cls, params, f"defense {name!r}")
    if seed is not None and "seed" in {f.name for f in dataclasses.fields(cls)} and "seed" not in kwargs:
        kwargs["seed"] = seed
    return cls(**kwargs)


def check_range(defense, key: str, low: float, high: float) -> None:
    value = getattr(defense, key)
    if not low <= value <= high:
        raise DivqatError(f"defense {defense.name!r}: {key} must be in [{low}, {high}], got {value}")


def renormalize(probs: Tensor) -> Tensor:
    probs = probs.clamp_min(0)
    return probs / probs.sum(-1, keepdim=True)


@torch.no_grad()
def answers_of(model, images: Tensor) -> Tensor:
    """A defense's own model's probabilities (eval mode, CPU). Written here rather than taken
    from divqat.train, so that serving a defended model never imports the training code."""
    return torch.softmax(model.eval()(images), -1)
