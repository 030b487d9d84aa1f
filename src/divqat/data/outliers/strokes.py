"""Pen strokes: 1-4 quadratic Bezier curves of random thickness on a dark background, drawn with
anti-aliased edges - handwriting-like shapes that are no digit or letter of any pool."""

import torch

from divqat.data.outliers.registry import register_outliers

POINTS = 24  # samples along each curve


def bezier(control: torch.Tensor) -> torch.Tensor:
    """(B, 3, 2) control points -> (B, POINTS, 2) points on the quadratic curve."""
    t = torch.linspace(0, 1, POINTS).view(1, -1, 1)
    p0, p1, p2 = control[:, 0:1], control[:, 1:2], control[:, 2:3]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def draw(points: torch.Tensor, thickness: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Distance from every pixel to the nearest curve point, turned into ink with a 1-pixel edge."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys], -1).view(1, -1, 1, 2)  # (1, HW, 1, 2)
    distance = (pixels - points.unsqueeze(1)).norm(dim=-1).min(-1).values  # (B, HW)
    ink = (thickness.view(-1, 1) + 0.5 - distance).clamp(0, 1)
    return ink.view(-1, height, width)


@register_outliers("strokes")
def pen_strokes(victim_train: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    channels, height, width = victim_train.shape[1:]
    size = torch.tensor([width, height], dtype=torch.float32)
    canvas = torch.zeros(n, height, width)
    count = torch.randint(1, 5, (n,), generator=g)
    for k in range(4):
        rows = (count > k).nonzero().squeeze(1)
        for chunk in rows.split(2048):  # bounded memory: chunk x HW x POINTS distances
            control = (0.15 + 0.7 * torch.rand(len(chunk), 3, 2, generator=g)) * size
            thickness = 0.6 + 1.6 * torch.rand(len(chunk), generator=g) * (height / 28)
            ink = draw(bezier(control), thickness, height, width)
            canvas[chunk] = torch.maximum(canvas[chunk], ink * (0.6 + 0.4 * torch.rand(len(chunk), 1, 1, generator=g)))
    return canvas.unsqueeze(1).repeat(1, channels, 1, 1)
