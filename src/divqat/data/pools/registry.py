"""The query-pool registry: name -> pool(splits, data_root) -> ImageSet."""

from collections.abc import Callable
from pathlib import Path

import torch

from divqat.data.folders import is_folder, read_folder_pool
from divqat.data.imageset import ImageSet
from divqat.data.splits import Splits
from divqat.errors import DivqatError
from divqat.registry import Registry

Pool = Callable[[Splits, Path | None], ImageSet]

POOLS = Registry("query pool")
register_pool = POOLS.register


def query_pool(name: str, splits: Splits, data_root: Path | None = None) -> ImageSet:
    """The pool's images shaped like the victim's inputs; labels are -1 where they are no victim
    class. `folder:PATH`: your own images (data/folders.py)."""
    if is_folder(name):
        return read_folder_pool(name, splits.input_shape)
    return POOLS.lookup(name)(splits, data_root)


def with_in_distribution(pool: torch.Tensor, thief_split: ImageSet, n: int, seed: int) -> torch.Tensor:
    """The pool's images with n images of the thief's own in-distribution split mixed in (a thief
    who holds a few images of the victim's task, unlabelled); which ones depends on the thief's seed."""
    return torch.cat([pool, in_distribution_seeds(thief_split, n, seed).images])


def in_distribution_seeds(thief_split: ImageSet, n: int, seed: int) -> ImageSet:
    """The n images of the thief's split a thief of this seed holds (`with_in_distribution`),
    with their labels: for the experimenter's no-query baseline, never for a thief."""
    if n > len(thief_split):
        raise DivqatError(f"in_seeds {n} is more than the {len(thief_split)} images of the thief's split")
    return thief_split.subset(torch.randperm(len(thief_split), generator=torch.Generator().manual_seed(seed))[:n])
