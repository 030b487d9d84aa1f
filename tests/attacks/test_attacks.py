"""Each attack on a tiny victim: beats chance, and is reproducible for a seed."""

import pytest
import torch

from divqat import metrics
from divqat.attacks import ATTACKS, Thief, get_attack
from divqat.blackbox import BlackBoxVictim
from divqat.configs import AttackConfig, VictimConfig
from divqat.errors import DivqatError
from divqat.train import predict_proba
from divqat.train.victim import train_fp

BUDGETS = {
    "knockoff": 800,
    "knockoff-adaptive": 800,
    "jbda": 800,
    "dfme": 6000,
    "art-knockoff": 800,
    "art-copycat": 800,
}


@pytest.fixture(scope="module")
def victim_model(tiny_splits):
    model, _ = train_fp(VictimConfig(fp_epochs=4, batch_size=64, seed=0), tiny_splits)
    return model


def steal(name, victim_model, splits, labels="soft", seed=0):
    config = AttackConfig(attack=name, pool="in", budget=BUDGETS[name], labels=labels, epochs=10, seed=seed)
    victim = BlackBoxVictim(lambda x: predict_proba(victim_model, x), config.budget)
    pool = None if name == "dfme" else splits.thief_pool.images
    thief = Thief(config, pool, splits.input_shape, splits.num_classes, torch.Generator().manual_seed(seed))
    surrogate = get_attack(name)(victim.oracle(), thief)
    assert victim.queries <= config.budget
    return predict_proba(surrogate, splits.test.images)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_beats_chance(name, victim_model, tiny_splits):
    stolen = steal(name, victim_model, tiny_splits)
    assert metrics.accuracy(stolen, tiny_splits.test.labels) > 0.2  # chance is 0.1


@pytest.mark.parametrize("name", ["knockoff", "jbda"])
def test_hard_label_thief_beats_chance(name, victim_model, tiny_splits):
    stolen = steal(name, victim_model, tiny_splits, labels="hard")
    assert metrics.accuracy(stolen, tiny_splits.test.labels) > 0.2


@pytest.mark.parametrize("name", ["knockoff", "knockoff-adaptive"])
def test_same_seed_same_result(name, victim_model, tiny_splits):
    assert torch.equal(steal(name, victim_model, tiny_splits, seed=3), steal(name, victim_model, tiny_splits, seed=3))


@pytest.mark.parametrize(
    "kwargs,match", [({"budget": 0}, "budget"), ({"labels": "fuzzy"}, "labels"), ({"pool": "web"}, "pool")]
)
def test_bad_config(kwargs, match):
    with pytest.raises(DivqatError, match=match):
        AttackConfig(**kwargs)


def test_unknown_attack():
    with pytest.raises(DivqatError, match="unknown attack"):
        get_attack("copycat")
