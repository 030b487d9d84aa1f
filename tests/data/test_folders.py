"""Your own images from folders: the layout, the shape rule, one-line errors, and train -> attack
-> report on a folder dataset through `divqat run`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from divqat.cli import main
from divqat.configs import AttackConfig, ConfigError, VictimConfig
from divqat.data import load_splits
from divqat.data.folders import fingerprint, read_folder_pool
from divqat.errors import DivqatError

CLASSES = ("circle", "cross", "stripes")  # sorted: labels 0, 1, 2


def drawing(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """A learnable RGB picture of its class, with noise."""
    y, x = np.mgrid[:side, :side] / side
    shape = {"circle": (x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1, "cross": (abs(x - y) < 0.15) | (abs(x + y - 1) < 0.15),
             "stripes": (x * 4).astype(int) % 2 == 0}[kind]  # fmt: skip
    pixels = np.where(shape[..., None], [220, 180, 40], [30, 60, 120]) + rng.normal(0, 20, (side, side, 3))
    return pixels.clip(0, 255).astype(np.uint8)


def write_dataset(root, per_class=(24, 8), side=16):
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for kind in CLASSES:
            (root / split / kind).mkdir(parents=True)
            for i in range(n):
                suffix = ".jpg" if i % 4 == 3 else ".png"
                Image.fromarray(drawing(kind, side, rng)).save(root / split / kind / f"{i}{suffix}")
    return root


@pytest.fixture
def folder(tmp_path):
    return write_dataset(tmp_path / "mine")


def test_a_folder_dataset_follows_the_stated_rule(folder, tmp_path):
    # One training image of another size and shape: centre-cropped, then resized to the common side.
    odd = Image.fromarray(drawing("cross", 24, np.random.default_rng(1))).crop((0, 0, 24, 20))
    odd.save(folder / "train" / "cross" / "odd.png")
    splits = load_splits(f"folder:{folder}")
    assert splits.num_classes == 3 and splits.input_shape == (3, 16, 16)
    every = torch.cat([splits.victim_train.labels, splits.thief_pool.labels])
    assert sorted(every.tolist()) == sorted([0] * 24 + [1] * 25 + [2] * 24)  # classes in sorted order
    assert splits.test.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    expected = np.asarray(odd.crop((2, 0, 22, 20)).resize((16, 16), Image.BILINEAR), dtype=np.float32) / 255
    images = torch.cat([splits.victim_train.images, splits.thief_pool.images])
    assert (images - torch.from_numpy(expected).permute(2, 0, 1)).abs().flatten(1).amax(1).min() < 1e-6

    pool = tmp_path / "pool" / "deep"
    pool.mkdir(parents=True)
    Image.fromarray(drawing("circle", 40, np.random.default_rng(2))).save(pool / "a.png")
    Image.fromarray(np.full((10, 12), 128, np.uint8)).save(pool.parent / "b.jpg")
    gray = read_folder_pool(f"folder:{pool.parent}", (1, 28, 28))  # converted to the victim's shape
    assert gray.images.shape == (2, 1, 28, 28) and gray.labels.tolist() == [-1, -1]
    assert gray.images.min() >= 0 and gray.images.max() <= 1


def test_grayscale_images_make_a_one_channel_dataset(tmp_path):
    for split in ("train", "test"):
        for kind in ("a", "b"):
            (tmp_path / split / kind).mkdir(parents=True)
            Image.fromarray(np.full((12, 12), 40 if kind == "a" else 200, np.uint8)).save(
                tmp_path / split / kind / "x.png"
            )
    assert load_splits(f"folder:{tmp_path}").input_shape == (1, 12, 12)


def broken(folder, how: str):
    if how == "no test":
        shutil.rmtree(folder / "test")  # the test's own temporary folder
    elif how == "empty class":
        (folder / "train" / "void").mkdir()
    elif how == "unreadable":
        (folder / "train" / "cross" / "7.png").write_bytes(b"not a png")
    elif how == "unknown test class":
        (folder / "test" / "zebra").mkdir()
        (folder / "train" / "circle" / "0.png").rename(folder / "test" / "zebra" / "0.png")
    elif how == "too long":
        Image.fromarray(np.zeros((10, 40, 3), np.uint8)).save(folder / "test" / "circle" / "long.png")


@pytest.mark.parametrize(
    "how,message",
    [
        ("no test", r"test: missing \(a folder dataset has train/ and test/"),
        ("empty class", r"train/void: no images"),
        ("unreadable", r"train/cross/7.png: not a readable image"),
        ("unknown test class", r"test/zebra: a class that train/ does not have"),
        ("too long", r"long.png: 40x10 is more than twice as long as wide"),
    ],
)
def test_a_bad_folder_is_a_one_line_error_naming_it(folder, how, message):
    broken(folder, how)
    with pytest.raises(DivqatError, match=message):
        load_splits(f"folder:{folder}")


def test_configs_check_the_folder_and_hashes_follow_its_content(folder, tmp_path):
    with pytest.raises(ConfigError, match="^dataset: folder:nowhere: no such directory"):
        VictimConfig(dataset="folder:nowhere")
    with pytest.raises(ConfigError, match="^pool: folder:nowhere: no such directory"):
        AttackConfig(pool="folder:nowhere")
    before = fingerprint(f"folder:{folder}")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "train" / "circle" / "0.png")
    assert fingerprint(f"folder:{folder}") != before  # a changed folder is a new dataset to the grid


def test_train_attack_and_report_on_a_folder_dataset(folder, tmp_path, monkeypatch):
    pool = tmp_path / "web"
    pool.mkdir()
    rng = np.random.default_rng(3)
    for i in range(40):  # the thief's own unlabelled pictures: noise and stripes of other colours
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(pool / f"{i}.png")
    config = {
        "name": "folders", "seeds": [0], "baseline": "qat",
        "victim": {"dataset": f"folder:{folder}", "model": "lenet5", "fp_epochs": 15, "epochs": 1, "batch_size": 16},
        "victims": [{"name": "qat", "method": "qat"}],
        "attack": {"attack": "knockoff", "budget": 60, "epochs": 30, "batch_size": 16, "surrogate": "lenet5"},
        "attacks": [{"pool": [f"folder:{pool}", "in"]}],
    }  # fmt: skip
    path = tmp_path / "folders.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "results"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert f"folder:{pool}" in report
    metrics = yaml.safe_load(next(out.glob("jobs/victim-*/metrics.json")).read_text())
    assert metrics["int8_accuracy"] > 0.6  # three classes: chance is a third
    stolen = {r["pool"]: r for r in map(json.loads, map(Path.read_text, out.glob("jobs/attack-*/result.json")))}
    assert stolen.keys() == {f"folder:{pool}", "in"} and all(r["queries"] == 60 for r in stolen.values())
    assert stolen["in"]["surrogate_accuracy"] > 0.6  # the thief's in-distribution pool steals it
