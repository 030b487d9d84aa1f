"""The model registry: `@register_model` over a builder; every model is PT2E-quantizable."""

from collections.abc import Callable

import torch
from torch import nn

from divqat.registry import Registry

MODELS = Registry("model")


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers a builder under its function name (timm style)."""
    return MODELS.register(builder.__name__)(builder)


class Normalize(nn.Module):
    """Per-channel normalisation inside the model, so deployed models take raw [0, 1] pixels."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> nn.Module:
    """Build a registered model for images of `input_shape` (C, H, W)."""
    builder = MODELS.lookup(name)
    channels = input_shape[0]
    normalize = Normalize(mean or [0.0] * channels, std or [1.0] * channels)
    return builder(normalize=normalize, num_classes=num_classes, input_shape=input_shape)
