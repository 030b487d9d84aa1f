"""Low-frequency noise: Gaussian noise on a coarse grid, upsampled, stretched to [0, 1] and given
a random contrast curve - smooth blobs and gradients, the texture of out-of-focus photographs."""

import torch
import torch.nn.functional as F

from divqat.data.outliers.registry import register_outliers


@register_outliers("noise")
def low_frequency_noise(victim_train: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    channels, height, width = victim_train.shape[1:]
    out = torch.empty(n, channels, height, width)
    grids = torch.randint(2, 8, (n,), generator=g)
    for grid in grids.unique().tolist():
        rows = (grids == grid).nonzero().squeeze(1)
        coarse = torch.randn(len(rows), channels, grid, grid, generator=g)
        out[rows] = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    flat = out.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    out = (out - low) / (high - low).clamp_min(1e-6)
    gamma = torch.exp(torch.randn(n, 1, 1, 1, generator=g) * 0.6)  # contrast curve
    scale = 0.3 + 0.7 * torch.rand(n, 1, 1, 1, generator=g)  # overall brightness
    return out.pow(gamma) * scale
