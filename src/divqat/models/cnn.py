"""A plain two-convolution CNN with batch norm: what a real thief trains first.

An independent check of our thieves trained this network (32 and 64 channels, batch norm, 128
hidden units, Adam 1e-3, 10 epochs) on 10k soft answers of a QAT LeNet-5 victim on the digits
pool and reached 70.5 % on Fashion-MNIST, 9 pp above our LeNet-5 surrogate. `cnn-wide` doubles
every width. Both are registered surrogates (and victims) like any other model.
"""

import torch
from torch import nn

from divqat.models.registry import Normalize, register_model


class PlainCNN(nn.Module):
    def __init__(self, widths: tuple[int, int, int], normalize: Normalize, num_classes: int, input_shape):
        super().__init__()
        channels, height, _ = input_shape
        c1, c2, hidden = widths
        self.normalize = normalize
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = height // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


@register_model
def cnn(**kwargs) -> nn.Module:
    return PlainCNN((32, 64, 128), **kwargs)


@register_model
def cnn_wide(**kwargs) -> nn.Module:
    return PlainCNN((64, 128, 256), **kwargs)
