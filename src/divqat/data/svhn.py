"""SVHN (cropped digits) from its MATLAB v5 files, read by scipy (no pickle)."""

from pathlib import Path

import numpy as np
import scipy.io
import torch

from divqat.data.imageset import ImageSet, from_uint8
from divqat.data.registry import Download, register_dataset
from divqat.errors import DivqatError

FILES = ("train_32x32.mat", "test_32x32.mat")


def read_mat(path: Path) -> ImageSet:
    try:
        mat = scipy.io.loadmat(path)
        x, y = mat["X"], mat["y"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DivqatError(f"{path}: not an SVHN .mat file ({e})") from None
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # HWCN -> NCHW
    labels = torch.from_numpy(y.reshape(-1).astype(np.int64) % 10)  # the files store digit 0 as 10
    return from_uint8(images, labels)


@register_dataset(
    name="svhn",
    num_classes=10,
    channels=3,
    size=32,
    files=FILES,
    downloads=(
        Download("http://ufldl.stanford.edu/housenumbers/" + FILES[0], "e26dedcc434d2e4c54c9b2d4a06d8373"),
        Download("http://ufldl.stanford.edu/housenumbers/" + FILES[1], "eb5a983be6a315427106f1b164d9cef3"),
    ),
    ood_pool="cifar10",
)
def read_svhn(root: Path) -> tuple[ImageSet, ImageSet]:
    return read_mat(root / FILES[0]), read_mat(root / FILES[1])
