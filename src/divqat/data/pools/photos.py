"""Crops of the two photographs scikit-learn ships (a temple in China, a flower): 10,000 crops
of 28 to 200 pixels, resized to the victim's input size (grey for one-channel victims)."""

from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images

from divqat.data.imageset import ImageSet
from divqat.data.pools.registry import register_pool
from divqat.data.splits import Splits

CROPS = 10_000


def random_crops(pictures: list[torch.Tensor], n: int, size: int, channels: int, seed: int) -> torch.Tensor:
    """n square crops (side 28-200 pixels, random place) of (3, H, W) pictures in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, channels, size, size)
    for i in range(n):
        picture = pictures[int(torch.randint(len(pictures), (1,), generator=g))]
        height, width = picture.shape[1:]
        side = int(torch.randint(28, min(200, height, width) + 1, (1,), generator=g))
        top = int(torch.randint(height - side + 1, (1,), generator=g))
        left = int(torch.randint(width - side + 1, (1,), generator=g))
        crop = picture[:, top : top + side, left : left + side].unsqueeze(0)
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        out[i] = crop.mean(0, keepdim=True).expand(channels, -1, -1) if channels == 1 else crop[:channels]
    return out.clamp_(0, 1)


@register_pool("photos")
def photographs(splits: Splits, data_root: Path | None) -> ImageSet:
    channels, size, _ = splits.input_shape
    pictures = [torch.tensor(p).permute(2, 0, 1).float() / 255 for p in load_sample_images().images]
    return ImageSet(random_crops(pictures, CROPS, size, channels, seed=0), torch.full((CROPS,), -1))
