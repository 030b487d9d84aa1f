"""CIFAR-style ResNet (He et al., 2016, section 4.2): 3 stages of basic blocks, 6n+2 layers."""

import torch
import torch.nn.functional as F
from torch import nn

from divqat.models.registry import Normalize, register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # option B: a 1x1 projection, which quantizes cleanly
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, normalize: Normalize, num_classes: int, input_shape: tuple[int, int, int]):
        super().__init__()
        blocks = (depth - 2) // 6
        self.normalize = normalize
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers, cin = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(blocks):
                layers.append(BasicBlock(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(self.normalize(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def resnet20(**kwargs) -> nn.Module:
    return CifarResNet(20, **kwargs)


@register_model
def resnet8(**kwargs) -> nn.Module:
    """A 3-block ResNet: the same family as resnet20, small enough for CPU tests."""
    return CifarResNet(8, **kwargs)
