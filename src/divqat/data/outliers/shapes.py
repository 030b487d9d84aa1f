"""Filled shapes: 1-3 rotated ellipses and rectangles of random grey levels on a random
background - flat regions and hard edges, unlike both clothing and digits."""

import math

import torch

from divqat.data.outliers.registry import register_outliers


def shape_masks(n: int, height: int, width: int, g: torch.Generator) -> torch.Tensor:
    """(n, H, W) masks in [0, 1]: a rotated ellipse or rectangle each, anti-aliased."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    centre = (torch.rand(n, 2, generator=g) * 1.2 - 0.6).view(n, 2, 1, 1)
    axes = (0.15 + 0.6 * torch.rand(n, 2, generator=g)).view(n, 2, 1, 1)
    angle = (torch.rand(n, generator=g) * math.pi).view(n, 1, 1)
    dx, dy = xs - centre[:, 0], ys - centre[:, 1]
    u = (dx * torch.cos(angle) + dy * torch.sin(angle)) / axes[:, 0]
    v = (-dx * torch.sin(angle) + dy * torch.cos(angle)) / axes[:, 1]
    ellipse = torch.sqrt(u**2 + v**2)
    rectangle = torch.maximum(u.abs(), v.abs())
    is_ellipse = (torch.rand(n, 1, 1, generator=g) < 0.5).float()
    level = is_ellipse * ellipse + (1 - is_ellipse) * rectangle
    edge = 2.0 / min(height, width) / axes.min(1).values  # about one pixel, in level units
    return ((1 - level) / edge + 0.5).clamp(0, 1)


@register_outliers("shapes")
def filled_shapes(victim_train: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    channels, height, width = victim_train.shape[1:]
    canvas = (torch.rand(n, 1, 1, generator=g) * 0.4).expand(n, height, width).clone()
    count = torch.randint(1, 4, (n,), generator=g)
    for k in range(3):
        rows = (count > k).nonzero().squeeze(1)
        mask = shape_masks(len(rows), height, width, g)
        grey = torch.rand(len(rows), 1, 1, generator=g)
        canvas[rows] = canvas[rows] * (1 - mask) + grey * mask
    return canvas.unsqueeze(1).repeat(1, channels, 1, 1)
