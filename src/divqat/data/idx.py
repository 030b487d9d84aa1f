"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed."""

import gzip
from pathlib import Path

import numpy as np
import torch

from divqat.errors import DivqatError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> torch.Tensor:
    """The array stored in an IDX file; a one-line DivqatError if it is malformed or truncated."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DivqatError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DivqatError(f"{path}: not an IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + dtype.itemsize * int(np.prod(shape))
    if len(raw) != expected:
        raise DivqatError(f"{path}: truncated or padded IDX file ({len(raw)} bytes, expected {expected})")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))


_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8/int8 array as IDX (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, _CODES[array.dtype], array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
