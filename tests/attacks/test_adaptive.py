"""The adaptive thieves a training-time defense must face, each on a tiny victim."""

import pytest
import torch

from divqat import metrics
from divqat.attacks import Thief, create_attack
from divqat.blackbox import BlackBoxVictim
from divqat.configs import AttackConfig, VictimConfig
from divqat.data.pools import with_in_distribution
from divqat.errors import DivqatError
from divqat.train import predict_proba
from divqat.train.victim import train_fp


@pytest.fixture(scope="module")
def victim_model(smooth_splits):
    model, _ = train_fp(VictimConfig(fp_epochs=4, batch_size=64, seed=0), smooth_splits)
    return model


def thief_for(splits, pool=None, **options):
    config = AttackConfig(pool="in", budget=1600, epochs=10, seed=0, **options)
    pool = splits.thief_pool.images if pool is None else pool
    return Thief(config, pool, splits.input_shape, splits.num_classes, torch.Generator().manual_seed(0))


def steal(victim_model, splits, pool=None, **options):
    thief = thief_for(splits, pool, **options)
    asked = []

    def answer(images):
        asked.append(len(images))
        return predict_proba(victim_model, images)

    victim = BlackBoxVictim(answer, thief.config.budget)
    surrogate = create_attack("knockoff").steal(victim.oracle(), thief)
    assert victim.queries == sum(asked) <= thief.config.budget
    return metrics.accuracy(predict_proba(surrogate, splits.test.images), splits.test.labels), victim


@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_label_smoothing_mixes_the_targets_with_the_uniform_answer_by_hand(smooth_splits, labels):
    probs = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    thief = thief_for(smooth_splits, labels=labels, label_smoothing=0.3)
    # eps 0.3 over 3 classes: each class gets 0.1, the rest of each row is 0.7 x its target
    expected = {"hard": [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1]], "soft": [[0.24, 0.59, 0.17], [0.45, 0.275, 0.275]]}
    assert torch.allclose(thief.targets(probs), torch.tensor(expected[labels]))
    assert thief_for(smooth_splits, labels="hard").targets(probs).tolist() == [1, 0]  # no smoothing: the indices


@pytest.mark.parametrize(
    "options",
    [
        # the smooth victim is sure of itself: tau 0.99 drops about a quarter of its answers
        {"confidence_tau": 0.99},
        {"confidence_tau": 0.99, "confidence_mode": "weight"},
        {"smoothing": 4},
        {"smoothing": 2, "labels": "hard"},
        {"surrogate": "cnn"},
        {"consistency_noise": 0.02},  # asks twice: half as many images, disagreements dropped
    ],
    ids=str,
)
def test_each_adaptive_thief_beats_chance(victim_model, smooth_splits, options):
    accuracy, victim = steal(victim_model, smooth_splits, **options)
    assert accuracy > 0.2  # chance is 0.1
    assert victim.queries == 1600  # smoothing spends the budget on copies, not extra images


def test_confidence_filter_drops_or_weights_the_unsure_answers(smooth_splits):
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.6, 0.2, 0.2]])
    images = torch.zeros(3, 1, 28, 28)
    dropped = thief_for(smooth_splits, confidence_tau=0.5).training_data(images, probs)
    assert len(dropped["inputs"]) == 2 and torch.equal(dropped["targets"], probs[[0, 2]])
    weighted = thief_for(smooth_splits, confidence_tau=0.5, confidence_mode="weight").training_data(images, probs)
    assert weighted["weights"].tolist() == pytest.approx([1.0, 0.8, 1.0])
    with pytest.raises(DivqatError, match="nothing to train on"):
        thief_for(smooth_splits, confidence_tau=0.95).training_data(images, probs)


def test_smoothing_answers_the_mean_of_augmented_copies(smooth_splits):
    thief = thief_for(smooth_splits, smoothing=3)
    seen = []

    def answer(images):
        seen.append(images)
        return torch.softmax(images.flatten(1)[:, :10] * 50, -1)

    victim = BlackBoxVictim(answer, 30)
    images = smooth_splits.thief_pool.images[:10]
    got = thief.query(victim.oracle(), images)
    copies = torch.cat(seen)
    assert victim.queries == 30 and len(copies) == 30 and not torch.equal(copies[0], copies[1])
    assert torch.allclose(got, answer(copies).view(10, 3, -1).mean(1))


def test_in_distribution_seeds_help_an_out_of_distribution_thief(victim_model, smooth_splits):
    greys = torch.rand(400, 1, 1, 1, generator=torch.Generator().manual_seed(0)).expand(400, 1, 28, 28).contiguous()
    junk = greys  # flat grey images: nothing to learn the task from
    alone, _ = steal(victim_model, smooth_splits, pool=junk)
    seeded, _ = steal(victim_model, smooth_splits, pool=with_in_distribution(junk, smooth_splits.thief_pool, 100, 0))
    assert seeded > alone + 0.1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"confidence_tau": 1.0}, "confidence_tau"),
        ({"confidence_mode": "vote"}, "confidence_mode"),
        ({"smoothing": 0}, "smoothing"),
        ({"in_seeds": -1}, "in_seeds"),
    ],
)
def test_bad_adaptive_options(kwargs, match):
    with pytest.raises(DivqatError, match=match):
        AttackConfig(**kwargs)
