"""Random affine augmentation on batches of images, used to stretch a small query pool."""

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 15.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.85, 1.15),
) -> torch.Tensor:
    n = len(images)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * translate * 2  # grid units span [-1, 1]
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros").clamp_(0, 1)


def sample_with_augmentation(images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n images: a random order of the pool, then augmented copies once the pool is used up."""
    return augmented_sample(images, n, generator)[1]


def augmented_sample(images: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(which pool image each is, the n images) of `sample_with_augmentation`."""
    index = torch.cat([torch.randperm(len(images), generator=generator) for _ in range(-(-n // len(images)))])[:n]
    out = images[index].clone()
    if n > len(images):
        out[len(images) :] = random_affine(out[len(images) :], generator)
    return index, out


def benign_shifts(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The images as a camera moves them - issue 18's benign guard: rotated up to 10 degrees,
    shifted up to 7 %, scaled 0.9-1.1, half of them mirrored, contrast 0.8-1.2 about each
    image's mean; the same for the same seed. Made of the images given and nothing else: a split
    the victim never trained on (the thief's for a direction, the test set for the final table)."""
    g = torch.Generator().manual_seed(seed)
    moved = random_affine(images, g, degrees=10.0, translate=0.07, scale=(0.9, 1.1))
    flip = torch.rand(len(images), generator=g) < 0.5
    moved[flip] = moved[flip].flip(-1)
    contrast = 0.8 + 0.4 * torch.rand(len(images), 1, 1, 1, generator=g)
    mean = moved.mean(dim=(1, 2, 3), keepdim=True)
    return ((moved - mean) * contrast + mean).clamp(0, 1)
