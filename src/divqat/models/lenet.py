"""LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, the paper-style small victim."""

import torch
from torch import nn

from divqat.models.registry import Normalize, register_model


class LeNet5(nn.Module):
    def __init__(self, normalize: Normalize, num_classes: int, input_shape: tuple[int, int, int]):
        super().__init__()
        channels, height, _ = input_shape
        self.normalize = normalize
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = ((height // 2) - 4) // 2  # 28 -> 5, 32 -> 6
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


@register_model
def lenet5(**kwargs) -> nn.Module:
    return LeNet5(**kwargs)
