"""Each attack on a tiny victim: beats chance, and is reproducible for a seed."""

import pytest
import torch

from divqat import metrics
from divqat.attacks import ATTACKS, Thief, create_attack, get_attack, register_attack
from divqat.blackbox import BlackBoxVictim
from divqat.configs import AttackConfig, ConfigError, VictimConfig, hashed_spec
from divqat.errors import DivqatError
from divqat.extraction import steal as steal_and_measure
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
    surrogate = create_attack(name, config.params).steal(victim.oracle(), thief)
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


def test_attack_parameters_are_typed_and_checked():
    assert AttackConfig(attack="jbda", params=["step=0.25", "seed_size=50"]).params == {"seed_size": 50, "step": 0.25}
    assert create_attack("knockoff-adaptive", {"clusters": "8"}).params() == {"clusters": 8, "round_size": 64,
                                                                           "step": 0.5}  # fmt: skip
    for params, match in (({"stp": 1}, "no parameter 'stp' \\(parameters: seed_size, step, round_epochs\\)"),
                          ({"step": -1}, "step must be > 0"), (["step"], "takes key=value"),
                          ({"seed_size": "many"}, "seed_size='many' is not an int")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"^params: .*{match}"):
            AttackConfig(attack="jbda", params=params)


def test_a_function_attack_takes_typed_parameters_from_the_config(tiny_splits):
    """A plugin's plain function registers as an attack; its keyword parameters are the attack's."""
    seen = {}

    @register_attack("counted")
    def counted(victim, thief, n: int = 3, scale: float = 1.0):
        seen.update(n=n, scale=scale)
        images = thief.pool[:n]
        return thief.train_surrogate(images, victim.query(images), epochs=1)

    try:
        config = AttackConfig(attack="counted", pool="in", budget=10, epochs=1, params=["n=5"])
        _, result = steal_and_measure(lambda x: torch.softmax(x.flatten(1)[:, :10], -1), tiny_splits, config)
        assert seen == {"n": 5, "scale": 1.0} and result["queries"] == 5 and result["params"] == {"n": 5}
    finally:
        ATTACKS.pop("counted")


def test_a_later_knob_left_at_its_default_keeps_the_job_hash():
    """params and schedule came after results were published: at their defaults they are not in
    a job's hash (every finished job kept its key); set, they are."""
    plain = AttackConfig()
    assert "schedule" not in hashed_spec(plain) and "params" not in hashed_spec(plain)
    assert hashed_spec(AttackConfig(schedule="constant"))["schedule"] == "constant"
    assert hashed_spec(AttackConfig(attack="jbda", params={"step": 0.2}))["params"] == {"step": 0.2}


def test_the_schedule_reaches_the_surrogate(victim_model, tiny_splits):
    def stolen(schedule):
        config = AttackConfig(pool="in", budget=300, epochs=3, schedule=schedule)
        victim = BlackBoxVictim(lambda x: predict_proba(victim_model, x), config.budget)
        thief = Thief(config, tiny_splits.thief_pool.images, tiny_splits.input_shape, 10, torch.Generator())
        return create_attack("knockoff").steal(victim.oracle(), thief)

    cosine, constant = stolen("cosine"), stolen("constant")
    assert not torch.equal(next(cosine.parameters()), next(constant.parameters()))
