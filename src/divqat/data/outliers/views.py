"""A thief's own kind of query, made of the victim's images: victim-train images under the
augmentation a thief that holds a few hundred images of the task stretches them with
(data/augment.py's random_affine: rotations up to 15 degrees, shifts up to 10 %, scale
0.85-1.15). Issue 18's probe of the wall: a victim taught to mislead on these is taught to
mislead on a camera's benign shifts too (rotations up to 10 degrees, shifts up to 7 %), so what
it loses on those is the price of this direction (docs/divqat.md)."""

import torch

from divqat.data.augment import random_affine
from divqat.data.outliers.registry import register_outliers


@register_outliers("views")
def thief_views(victim_train: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    return random_affine(victim_train[torch.randint(len(victim_train), (n,), generator=g)], g)
