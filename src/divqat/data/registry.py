"""The dataset registry: each dataset names its files, where to download them, and a reader."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from divqat.data.imageset import ImageSet
from divqat.registry import Registry


@dataclass(frozen=True)
class Download:
    url: str
    md5: str  # of the file as published upstream


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    size: int
    files: tuple[str, ...]  # what must exist in the data directory
    read: Callable[[Path], tuple[ImageSet, ImageSet]]  # dir -> (train, test)
    downloads: tuple[Download, ...] = field(default=())
    ood_pool: str = ""  # the thief's out-of-distribution query set for this victim
    # dir -> whether its files hold this dataset (by content), for datasets that share file names.
    identify: Callable[[Path], bool] | None = None


DATASETS = Registry("dataset")


def register_dataset(**info):
    """Decorator: `@register_dataset(name=..., ...)` over a reader `dir -> (train, test)`."""

    def wrap(read):
        DATASETS.register(info["name"])(DatasetInfo(read=read, **info))
        return read

    return wrap


get_dataset = DATASETS.lookup
