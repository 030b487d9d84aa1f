"""Shared fixtures: small, learnable, synthetic datasets written in the real on-disk formats."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from divqat.data.idx import write_idx
from divqat.data.mnist import IDX_FILES

# Property tests explore new examples on every local run (the seed is printed at the end; pass
# --hypothesis-seed=N to replay one) and are derandomised with seed 0 in CI, so a clean clone
# passes or fails the same way on every machine.
# Examples they ever found are kept as explicit @example cases beside each test.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# The suite runs on pytest-xdist workers (README: `-n 2`), each with one torch thread: the same
# numbers on every machine, no two workers fighting over a core, and the small models here
# gain nothing from a second thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before hypothesis's own plugin reads --hypothesis-seed
def pytest_configure(config):
    """Every run has one hypothesis seed, shown at the end: 0 in CI, a fresh one locally; each
    pytest-xdist worker takes the controller's, so the seed printed replays the whole run."""
    if config.getoption("hypothesis_seed", None) is None:
        seed = getattr(config, "workerinput", {}).get("hypothesis_seed")
        if seed is None:
            seed = 0 if os.environ.get("CI") else int.from_bytes(os.urandom(4), "little")
        config.option.hypothesis_seed = seed
    from hypothesis import core

    core.global_force_seed = int(config.option.hypothesis_seed)  # what --hypothesis-seed sets


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: called in the controller, per worker
def pytest_configure_node(node):
    node.workerinput["hypothesis_seed"] = node.config.option.hypothesis_seed


def pytest_terminal_summary(terminalreporter, config):
    seed = config.getoption("hypothesis_seed", None)
    profile = settings.get_current_profile_name()
    terminalreporter.write_line(f"hypothesis: profile {profile!r}, seed {seed} (replay with --hypothesis-seed={seed})")


def class_images(
    n: int, size: int, channels: int, num_classes: int, seed: int, smooth: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images: one fixed random template per class plus noise, so a CNN learns them fast.
    smooth: templates of 4 x 4 blocks, whose class survives a small shift or rotation."""
    rng = np.random.default_rng(1234)
    templates = rng.uniform(0, 255, size=(num_classes, channels, size, size))
    if smooth:
        coarse = rng.uniform(0, 255, size=(num_classes, channels, 4, 4))
        templates = coarse.repeat(-(-size // 4), axis=2).repeat(-(-size // 4), axis=3)[:, :, :size, :size]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    images = templates[labels] * 0.6 + rng.uniform(0, 255 * 0.4, size=(n, channels, size, size))
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_idx_dataset(root: Path, n_train: int, n_test: int, smooth: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    train_x, train_y = class_images(n_train, 28, 1, 10, seed=1, smooth=smooth)
    test_x, test_y = class_images(n_test, 28, 1, 10, seed=2, smooth=smooth)
    for name, array in zip(IDX_FILES, (train_x[:, 0], train_y, test_x[:, 0], test_y), strict=True):
        write_idx(root / name, array)
    return root


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A data root holding a 1,200 + 300 image 'fashion-mnist' in IDX .gz files."""
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "fashion-mnist", n_train=1200, n_test=300)
    return root


@pytest.fixture(scope="session")
def tiny_splits(tiny_root):
    from divqat.data import load_splits

    return load_splits("fashion-mnist", tiny_root)


@pytest.fixture(scope="session")
def smooth_splits(tmp_path_factory):
    """Like tiny_splits, with coarse templates: augmented views keep their class (for thieves
    that query augmented copies)."""
    from divqat.data import load_splits

    root = tmp_path_factory.mktemp("smooth")
    write_idx_dataset(root / "fashion-mnist", n_train=1200, n_test=300, smooth=True)
    return load_splits("fashion-mnist", root)
