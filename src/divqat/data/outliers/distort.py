"""Heavily distorted victim-train images: a strong smooth warp (several pixels), then a random
zoom into a quarter of the image and, for half of them, inverted grey levels."""

import torch
import torch.nn.functional as F

from divqat.data.outliers.registry import register_outliers


@register_outliers("distort")
def heavy_distortion(victim_train: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    images = victim_train[torch.randint(len(victim_train), (n,), generator=g)]
    height, width = images.shape[2:]
    base = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 1, height, width], align_corners=False)
    zoom = 0.5 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    shift = (torch.rand(n, 1, 1, 2, generator=g) * 2 - 1) * (1 - zoom)
    warp = F.interpolate(torch.randn(n, 2, 4, 4, generator=g), size=(height, width), mode="bicubic")
    grid = base * zoom + shift + 0.25 * warp.permute(0, 2, 3, 1)
    out = F.grid_sample(images, grid, align_corners=False, padding_mode="reflection")
    invert = (torch.rand(n, 1, 1, 1, generator=g) < 0.5).float()
    return invert * (1 - out) + (1 - invert) * out
