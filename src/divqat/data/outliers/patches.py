"""Patch-shuffled images: a victim-train image cut into a grid of patches put back in random
order - the victim's own textures without its objects' shapes."""

import torch

from divqat.data.outliers.registry import register_outliers


@register_outliers("patch-shuffle")
def patch_shuffle(victim_train: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    channels, height, width = victim_train.shape[1:]
    images = victim_train[torch.randint(len(victim_train), (n,), generator=g)]
    out = torch.empty_like(images)
    grids = torch.randint(0, 2, (n,), generator=g)  # 4 x 4 or 2 x 2 patches (7 or 14 pixels at 28)
    for choice, cells in ((0, 4), (1, 2)):
        rows = (grids == choice).nonzero().squeeze(1)
        ph, pw = height // cells, width // cells
        x = images[rows][:, :, : ph * cells, : pw * cells]
        tiles = x.reshape(len(rows), channels, cells, ph, cells, pw).permute(0, 2, 4, 1, 3, 5)
        tiles = tiles.reshape(len(rows), cells * cells, channels, ph, pw)
        order = torch.rand(len(rows), cells * cells, generator=g).argsort(1)
        tiles = tiles[torch.arange(len(rows)).unsqueeze(1), order]
        tiles = tiles.reshape(len(rows), cells, cells, channels, ph, pw).permute(0, 3, 1, 4, 2, 5)
        out[rows] = images[rows]
        out[rows, :, : ph * cells, : pw * cells] = tiles.reshape(len(rows), channels, ph * cells, pw * cells)
    return out
