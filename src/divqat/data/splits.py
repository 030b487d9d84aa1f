"""Deterministic, disjoint splits: victim-train, thief-pool (both from train) and test."""

from dataclasses import dataclass
from pathlib import Path

import torch

from divqat.data.folders import is_folder, read_folder_dataset
from divqat.data.imageset import ImageSet
from divqat.data.locate import locate
from divqat.data.registry import get_dataset

# Fixed, not the run's seed: every victim and thief of a dataset sees the same split.
SPLIT_SEED = 20251230
THIEF_POOL_FRACTION = 1 / 6  # Fashion-MNIST: 50,000 victim-train, 10,000 thief-pool


@dataclass(frozen=True)
class Splits:
    dataset: str
    num_classes: int
    victim_train: ImageSet
    thief_pool: ImageSet
    test: ImageSet

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.test.images.shape[1:])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of victim-train: the normalisation baked into the models."""
        x = self.victim_train.images
        return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def split(
    train: ImageSet, test: ImageSet, dataset: str, num_classes: int, thief_fraction: float = THIEF_POOL_FRACTION
) -> Splits:
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_pool = round(len(train) * thief_fraction)
    return Splits(
        dataset=dataset,
        num_classes=num_classes,
        victim_train=train.subset(order[n_pool:]),
        thief_pool=train.subset(order[:n_pool]),
        test=test,
    )


def load_splits(name: str, data_root: Path | None = None) -> Splits:
    """A registered dataset's splits, or those of your own images (`folder:PATH`, data/folders.py)."""
    if is_folder(name):
        train, test, classes = read_folder_dataset(name)
        return split(train, test, name, len(classes))
    info = get_dataset(name)
    train, test = info.read(locate(info, data_root))
    return split(train, test, info.name, info.num_classes)
