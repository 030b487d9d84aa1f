"""Fashion-MNIST (the embedded default, from Debian's dataset-fashion-mnist) and MNIST.

Both use the same four file names, so a folder is taken for one of them only if it is named
after it or its files' content says so (their label counts and first labels).
"""

import gzip
from pathlib import Path

from divqat.data.idx import read_idx
from divqat.data.imageset import ImageSet, from_uint8
from divqat.data.registry import Download, register_dataset

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def first_labels(path: Path, n: int = 10) -> tuple[int, list[int]] | None:
    """(count, first n labels) of an IDX label file, reading only its first bytes."""
    try:
        with gzip.open(path) as f:
            head = f.read(8 + n)
    except (OSError, EOFError):
        return None
    if len(head) < 8 + n or head[:4] != b"\x00\x00\x08\x01":
        return None
    return int.from_bytes(head[4:8], "big"), list(head[8:])


def same_content(train: list[int], test: list[int]):
    """The dataset's fingerprint: 60,000 and 10,000 labels starting with these ten each."""

    def identify(root: Path) -> bool:
        labels = first_labels(root / IDX_FILES[1]), first_labels(root / IDX_FILES[3])
        return labels == ((60_000, train), (10_000, test))

    return identify


def read_idx_dataset(root: Path) -> tuple[ImageSet, ImageSet]:
    train_x, train_y, test_x, test_y = (read_idx(root / name) for name in IDX_FILES)
    return from_uint8(train_x, train_y), from_uint8(test_x, test_y)


def _downloads(base: str, md5s: tuple[str, ...]) -> tuple[Download, ...]:
    return tuple(Download(base + name, md5) for name, md5 in zip(IDX_FILES, md5s, strict=True))


register_dataset(
    name="fashion-mnist",
    num_classes=10,
    channels=1,
    size=28,
    files=IDX_FILES,
    downloads=_downloads(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
    ood_pool="digits",
    identify=same_content([9, 0, 0, 3, 0, 2, 7, 2, 5, 5], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]),
)(read_idx_dataset)

register_dataset(
    name="mnist",
    num_classes=10,
    channels=1,
    size=28,
    files=IDX_FILES,
    downloads=_downloads(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
    ood_pool="fashion-mnist",
    identify=same_content([5, 0, 4, 1, 9, 2, 1, 3, 1, 4], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
)(read_idx_dataset)
