"""Datasets: readers registered by name, located on disk, split for victim and thief."""

from divqat.data import cifar, mnist, svhn  # noqa: F401  (registers the readers)
from divqat.data.digits import digits
from divqat.data.imageset import ImageSet
from divqat.data.registry import DATASETS, get_dataset, register_dataset
from divqat.data.splits import Splits, load_splits

__all__ = ["DATASETS", "ImageSet", "Splits", "digits", "get_dataset", "load_splits", "register_dataset"]
