"""The dataset registry: each dataset names its files, where to download them, and a reader."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from divqat.data.imageset import ImageSet
from divqat.errors import DivqatError


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


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(**info):
    """Decorator: `@register_dataset(name=..., ...)` over a reader `dir -> (train, test)`."""

    def wrap(read):
        DATASETS[info["name"]] = DatasetInfo(read=read, **info)
        return read

    return wrap


def get_dataset(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DivqatError(f"unknown dataset {name!r}; choose from {', '.join(sorted(DATASETS))}")
    return DATASETS[name]
