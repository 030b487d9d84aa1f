"""CIFAR-10 and CIFAR-100 from the authors' *binary* archives: fixed-size records, no pickle."""

import tarfile
from pathlib import Path

import numpy as np
import torch

from divqat.data.imageset import ImageSet, from_uint8
from divqat.data.registry import Download, register_dataset
from divqat.errors import DivqatError

PIXELS = 3 * 32 * 32


def read_records(blob: bytes, label_bytes: int, label_index: int, source: str) -> ImageSet:
    """Records of `label_bytes` label bytes then 3072 pixel bytes (R, G, B planes)."""
    record = label_bytes + PIXELS
    if len(blob) == 0 or len(blob) % record:
        raise DivqatError(f"{source}: {len(blob)} bytes is not a whole number of CIFAR records")
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(-1, record)
    images = torch.from_numpy(rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy())
    labels = torch.from_numpy(rows[:, label_index].astype(np.int64))
    return from_uint8(images, labels)


def read_archive(archive: Path, members: dict[str, list[str]], label_bytes: int) -> tuple[ImageSet, ImageSet]:
    """Reads the named members of the tar.gz without extracting anything to disk."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            blobs = {m.name.split("/")[-1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DivqatError(f"{archive}: cannot read archive ({e})") from None
    splits = []
    for split in ("train", "test"):
        missing = [name for name in members[split] if name not in blobs]
        if missing:
            raise DivqatError(f"{archive}: missing {', '.join(missing)}")
        parts = [read_records(blobs[n], label_bytes, label_bytes - 1, f"{archive}:{n}") for n in members[split]]
        splits.append(ImageSet(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts])))
    return splits[0], splits[1]


CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR100_ARCHIVE = "cifar-100-binary.tar.gz"


@register_dataset(
    name="cifar10",
    num_classes=10,
    channels=3,
    size=32,
    files=(CIFAR10_ARCHIVE,),
    downloads=(Download("https://www.cs.toronto.edu/~kriz/" + CIFAR10_ARCHIVE, "c32a1d4ab5d03f1284b67883e8d87530"),),
    ood_pool="cifar100",
)
def read_cifar10(root: Path) -> tuple[ImageSet, ImageSet]:
    members = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
    return read_archive(root / CIFAR10_ARCHIVE, members, label_bytes=1)


@register_dataset(
    name="cifar100",
    num_classes=100,
    channels=3,
    size=32,
    files=(CIFAR100_ARCHIVE,),
    downloads=(Download("https://www.cs.toronto.edu/~kriz/" + CIFAR100_ARCHIVE, "03b5dce01913d631647c71ecec9e9cb8"),),
    ood_pool="cifar10",
)
def read_cifar100(root: Path) -> tuple[ImageSet, ImageSet]:
    # Two label bytes per record (coarse, fine): the fine label is the second.
    return read_archive(root / CIFAR100_ARCHIVE, {"train": ["train.bin"], "test": ["test.bin"]}, label_bytes=2)
