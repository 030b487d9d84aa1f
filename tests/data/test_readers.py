"""Every registered reader, on small files in the real formats that the test writes."""

import io
import tarfile

import numpy as np
import pytest
import scipy.io
import torch
from conftest import class_images

from divqat.data import DATASETS, digits, get_dataset, load_splits
from divqat.data.locate import ENV_VAR, locate
from divqat.errors import DivqatError


def test_splits_are_disjoint_deterministic_and_complete(tiny_root):
    a = load_splits("fashion-mnist", tiny_root)
    b = load_splits("fashion-mnist", tiny_root)
    assert (len(a.victim_train), len(a.thief_pool), len(a.test)) == (1000, 200, 300)
    assert torch.equal(a.thief_pool.images, b.thief_pool.images)
    victim = {x.numpy().tobytes() for x in a.victim_train.images}
    assert not any(x.numpy().tobytes() in victim for x in a.thief_pool.images)
    assert a.victim_train.images.min() >= 0 and a.victim_train.images.max() <= 1
    assert a.input_shape == (1, 28, 28)


def test_lookup_order_data_root_then_env(tmp_path, tiny_root, monkeypatch):
    info = get_dataset("fashion-mnist")
    monkeypatch.setenv(ENV_VAR, str(tiny_root))
    assert locate(info, None) == tiny_root / "fashion-mnist"
    assert locate(info, tiny_root / "fashion-mnist") == tiny_root / "fashion-mnist"


def test_missing_data_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr("divqat.data.locate.SYSTEM_ROOT", tmp_path / "nowhere")
    with pytest.raises(DivqatError, match="not found") as e:
        load_splits("mnist", tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(DivqatError, match="not a directory"):
        load_splits("mnist", tmp_path / "missing")


def test_unknown_dataset():
    with pytest.raises(DivqatError, match="unknown dataset"):
        get_dataset("imagenet-21k")


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def _records(n: int, label_bytes: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    images, labels = class_images(n, 32, 3, 10, seed)
    rows = [bytes([0] * (label_bytes - 1) + [int(y)]) + x.tobytes() for x, y in zip(images, labels, strict=True)]
    return b"".join(rows), images, labels


def test_cifar10_binary(tmp_path):
    blobs = {f"cifar-10-batches-bin/data_batch_{i}.bin": _records(4, 1, i)[0] for i in range(1, 6)}
    test_blob, test_images, test_labels = _records(3, 1, 9)
    blobs["cifar-10-batches-bin/test_batch.bin"] = test_blob
    _tar(tmp_path / "cifar-10-binary.tar.gz", blobs)
    train, test = DATASETS["cifar10"].read(tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 3
    assert test.labels.tolist() == test_labels.tolist()
    assert torch.allclose(test.images * 255, torch.tensor(test_images, dtype=torch.float32))


def test_cifar100_uses_fine_labels(tmp_path):
    train_blob, _, train_labels = _records(5, 2, 1)
    _tar(tmp_path / "cifar-100-binary.tar.gz", {"x/train.bin": train_blob, "x/test.bin": _records(2, 2, 2)[0]})
    train, _ = DATASETS["cifar100"].read(tmp_path)
    assert train.labels.tolist() == train_labels.tolist()


def test_cifar_truncated_record(tmp_path):
    _tar(tmp_path / "cifar-100-binary.tar.gz", {"x/train.bin": b"\x00" * 100, "x/test.bin": b"\x00" * 3074})
    with pytest.raises(DivqatError, match="CIFAR records"):
        DATASETS["cifar100"].read(tmp_path)


def test_svhn_mat(tmp_path):
    for name, n in (("train_32x32.mat", 6), ("test_32x32.mat", 4)):
        images, labels = class_images(n, 32, 3, 10, n)
        stored = np.where(labels == 0, 10, labels).reshape(-1, 1)  # SVHN stores digit 0 as 10
        scipy.io.savemat(tmp_path / name, {"X": images.transpose(2, 3, 1, 0), "y": stored})
    train, test = DATASETS["svhn"].read(tmp_path)
    assert train.images.shape == (6, 3, 32, 32)
    assert test.labels.tolist() == class_images(4, 32, 3, 10, 4)[1].tolist()


def test_digits_pool_is_real_and_sized():
    pool = digits(28, 1)
    assert pool.images.shape == (1797, 1, 28, 28)
    assert pool.images.min() >= 0 and pool.images.max() <= 1
    assert set(pool.labels.tolist()) == set(range(10))
    assert digits(32, 3).images.shape == (1797, 3, 32, 32)


def fake_idx_labels(root, train_first: list[int], test_first: list[int]):
    """The four IDX file names, with label files of the right counts and first labels (enough to
    identify a dataset by content; the image files are placeholders)."""
    from divqat.data.idx import write_idx
    from divqat.data.mnist import IDX_FILES

    root.mkdir(parents=True, exist_ok=True)
    for name, count, first in ((IDX_FILES[1], 60_000, train_first), (IDX_FILES[3], 10_000, test_first)):
        labels = np.zeros(count, dtype=np.uint8)
        labels[: len(first)] = first
        write_idx(root / name, labels)
    for name in (IDX_FILES[0], IDX_FILES[2]):
        write_idx(root / name, np.zeros((1, 28, 28), dtype=np.uint8))
    return root


MNIST_FIRST = ([5, 0, 4, 1, 9, 2, 1, 3, 1, 4], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
FASHION_FIRST = ([9, 0, 0, 3, 0, 2, 7, 2, 5, 5], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])


def test_a_flat_root_is_identified_by_content(tmp_path, monkeypatch):
    """MNIST and Fashion-MNIST share file names: a flat root of MNIST files is never taken for
    Fashion-MNIST (whose thief would then query the victim's own data as 'out of distribution')."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr("divqat.data.locate.SYSTEM_ROOT", tmp_path / "nowhere")
    mnist_flat = fake_idx_labels(tmp_path / "flat", *MNIST_FIRST)
    assert locate(get_dataset("mnist"), mnist_flat) == mnist_flat
    with pytest.raises(DivqatError, match="fashion-mnist not found"):
        locate(get_dataset("fashion-mnist"), mnist_flat)
    fashion = fake_idx_labels(mnist_flat / "fashion-mnist", *FASHION_FIRST)
    assert locate(get_dataset("fashion-mnist"), mnist_flat) == fashion


def test_an_unidentifiable_flat_root_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr("divqat.data.locate.SYSTEM_ROOT", tmp_path / "nowhere")
    unknown = fake_idx_labels(tmp_path / "mine", [1] * 10, [2] * 10)
    for name in ("mnist", "fashion-mnist"):
        with pytest.raises(DivqatError, match="ambiguous"):
            locate(get_dataset(name), unknown)
    named = fake_idx_labels(tmp_path / "mine" / "mnist", [1] * 10, [2] * 10)
    assert locate(get_dataset("mnist"), unknown) == named  # the sub-folder names it
