"""Outlier sources and query pools: deterministic, and the training outliers disjoint from
every pool a thief is evaluated or tuned on."""

import pytest
import torch

from divqat.configs import AttackConfig, ConfigError
from divqat.data.outliers import OUTLIERS, make_outliers
from divqat.data.pools import POOLS, query_pool, with_in_distribution
from divqat.data.pools.registry import in_distribution_seeds
from divqat.errors import DivqatError
from divqat.extraction import thief_pool


@pytest.mark.parametrize("name", sorted(OUTLIERS))
def test_each_source_is_deterministic_per_seed_and_valid(tiny_splits, name):
    train = tiny_splits.victim_train.images
    a, b, c = (make_outliers(name, train, 50, seed) for seed in (0, 0, 1))
    assert a.shape == (50, *train.shape[1:]) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and a.flatten(1).std(1).gt(0).all()  # no blank image


def test_mixes_are_equal_parts_and_names_are_checked(tiny_splits):
    train = tiny_splits.victim_train.images
    mixed = make_outliers("noise,shapes", train, 11, 0)
    assert len(mixed) == 11
    for bad, match in [("noise,noise", "repeat"), ("", "at least one"), ("digits", "unknown outlier source")]:
        with pytest.raises(DivqatError, match=match):
            make_outliers(bad, train, 4, 0)


def nearest_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.cdist(a.flatten(1), b.flatten(1)).min().item()


def test_outliers_never_touch_the_thief_split_or_any_evaluation_pool(tiny_splits, monkeypatch):
    """The sources receive victim-train images only, and generating them reads none of the
    pools' sources: with those loaders broken, every source still works."""

    def forbidden(*args, **kwargs):
        raise AssertionError("an outlier source read a query pool")

    for target in ("divqat.data.pools.standard.digits", "divqat.data.pools.photos.load_sample_images",
                   "divqat.data.pools.glyphs.letters", "divqat.data.pools.glyphs.sample_pictures"):  # fmt: skip
        monkeypatch.setattr(target, forbidden)
    poisoned = tiny_splits.victim_train.images.clone()
    outliers = make_outliers(",".join(sorted(OUTLIERS)), poisoned, 100, 0)
    assert torch.isfinite(outliers).all() and torch.equal(poisoned, tiny_splits.victim_train.images)


def test_training_outliers_are_no_copies_of_pool_images(tiny_splits):
    """No outlier is (a near copy of) a textured image of the thief's split, the evaluation pools
    or the validation pool. Flat crops (std < 0.05: a patch of sky) are left out: a flat grey
    square is near every flat grey square."""
    outliers = make_outliers(",".join(sorted(OUTLIERS)), tiny_splits.victim_train.images, 500, 0)
    for name in ("in", "ood", "photos", "validation"):
        pool = query_pool(name, tiny_splits).images[:2000]
        pool = pool[pool.flatten(1).std(1) > 0.05]
        # Per-pixel RMS distance of the closest pair: 0.02 is an invisible difference.
        assert nearest_distance(outliers, pool) / pool[0].numel() ** 0.5 > 0.02, name


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pools_match_the_victims_inputs(tiny_splits, name):
    pool = query_pool(name, tiny_splits)
    assert pool.images.shape[1:] == tiny_splits.input_shape and (len(pool) > 0) == (name != "own")
    assert len(pool) == 0 or (pool.images.min() >= 0 and pool.images.max() <= 1)


def test_the_own_pool_is_the_thiefs_in_distribution_images_alone(tiny_splits):
    held = in_distribution_seeds(tiny_splits.thief_pool, 20, seed=3).images
    assert torch.equal(thief_pool(AttackConfig(pool="own", in_seeds=20, seed=3), tiny_splits), held)
    with pytest.raises(ConfigError, match="in_seeds"):
        AttackConfig(pool="own")


def test_evaluation_and_validation_pools_share_nothing(tiny_splits):
    ood, photos, validation = (query_pool(n, tiny_splits).images for n in ("ood", "photos", "validation"))
    assert (ood.sum() > 0) and nearest_distance(validation[:2000], ood) > 0.5
    assert nearest_distance(validation[:2000], photos[:2000]) > 0.5


def test_in_distribution_seeds_come_from_the_thief_split(tiny_splits):
    pool = query_pool("ood", tiny_splits).images
    seeded = with_in_distribution(pool, tiny_splits.thief_pool, 20, seed=0)
    assert isinstance(seeded, torch.Tensor) and len(seeded) == len(pool) + 20  # images only: no labels reach the thief
    added = seeded[len(pool) :]
    assert all((tiny_splits.thief_pool.images == x).flatten(1).all(1).any() for x in added)
    with pytest.raises(DivqatError, match="more than"):
        with_in_distribution(pool, tiny_splits.thief_pool, 10**6, seed=0)
    # The no-query baseline (benchmarks/insider_gain.py) trains on exactly these images.
    held = in_distribution_seeds(tiny_splits.thief_pool, 20, seed=0)
    assert torch.equal(held.images, added) and held.labels.min() >= 0
