"""The protocol's pools: the thief's own split, the paired out-of-distribution dataset, and the
two mixed (KnockoffNets' mostly irrelevant pool)."""

from pathlib import Path

import torch

from divqat.data.augment import sample_with_augmentation
from divqat.data.digits import digits
from divqat.data.imageset import ImageSet
from divqat.data.pools.registry import register_pool
from divqat.data.registry import DATASETS, get_dataset
from divqat.data.splits import Splits, load_splits
from divqat.errors import DivqatError


@register_pool("in")
def thief_split(splits: Splits, data_root: Path | None) -> ImageSet:
    return splits.thief_pool


@register_pool("own")
def own_images_only(splits: Splits, data_root: Path | None) -> ImageSet:
    """No images of its own beyond the thief's in-distribution ones (`in_seeds`): a thief who asks
    only about the few images of the task it holds, and augmented copies of them."""
    return ImageSet(torch.zeros(0, *splits.input_shape), torch.zeros(0, dtype=torch.long))


@register_pool("ood")
def paired_dataset(splits: Splits, data_root: Path | None) -> ImageSet:
    """Digits for (Fashion-)MNIST-sized victims, else the protocol's pair (CIFAR-10 -> CIFAR-100...);
    a user's own data (divqat.api.dataset, no registered pair) gets the digits at its shape."""
    name = get_dataset(splits.dataset).ood_pool if splits.dataset in DATASETS else "digits"
    channels, size, _ = splits.input_shape
    if name == "digits":
        return ImageSet(digits(size, channels).images, torch.full((1797,), -1))
    if name == splits.dataset:
        raise DivqatError(f"{splits.dataset}'s out-of-distribution pool cannot be itself")
    other = load_splits(name, data_root)
    images = other.victim_train.images
    if images.shape[1:] != splits.input_shape:
        images = torch.nn.functional.interpolate(images.mean(1, keepdim=True), size=(size, size))
        images = images.repeat(1, channels, 1, 1)
    return ImageSet(images, torch.full((len(images),), -1))


@register_pool("mixed")
def mixed(splits: Splits, data_root: Path | None) -> ImageSet:
    """The whole thief split among four times as many out-of-distribution images (augmented views
    where the pool is smaller), labelled -1."""
    inside = splits.thief_pool
    junk = sample_with_augmentation(paired_dataset(splits, data_root).images, 4 * len(inside),
                                    torch.Generator().manual_seed(0))  # fmt: skip
    labels = torch.cat([torch.full((len(junk),), -1), inside.labels])
    return ImageSet(torch.cat([junk, inside.images]), labels)
