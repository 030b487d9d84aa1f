"""The recipes on a tiny learnable dataset: QAT vs DivQAT at alpha 0 and alpha > 0."""

import pytest
import torch

from divqat import metrics
from divqat.configs import VictimConfig
from divqat.train import predict_proba
from divqat.train.victim import build_victim, train_fp

# The objective alone (no outlier term, no distillation): the protecting defaults are tested elsewhere.
BASE = dict(epochs=2, fp_epochs=3, batch_size=64, lr=1e-3, seed=7, beta=0.0, distill=0.0)


@pytest.fixture(scope="module")
def fp_model(tiny_splits):
    model, _ = train_fp(VictimConfig(**BASE), tiny_splits)
    return model


def test_fp_learns(tiny_splits, fp_model):
    probs = predict_proba(fp_model, tiny_splits.test.images)
    assert metrics.accuracy(probs, tiny_splits.test.labels) > 0.5


def test_alpha_zero_gives_exactly_the_qat_result(tiny_splits, fp_model):
    qat = build_victim(VictimConfig(method="qat", **BASE), tiny_splits, fp_model)
    div = build_victim(VictimConfig(method="divqat", alpha=0.0, **BASE), tiny_splits, fp_model)
    a, b = qat.prepared.state_dict(), div.prepared.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = tiny_splits.test.images
    assert torch.equal(qat.deployed(x), div.deployed(x))


# Each form at an alpha of its working range (the bounded JS needs a larger one).
@pytest.mark.parametrize("divergence,non_target,alpha", [("kl", False, 1.0), ("js", True, 3.0)])
def test_alpha_raises_divergence_from_the_teacher(tiny_splits, fp_model, divergence, non_target, alpha):
    def kl_to_teacher(alpha):
        config = VictimConfig(method="divqat", alpha=alpha, divergence=divergence, non_target=non_target, **BASE)
        victim = build_victim(config, tiny_splits, fp_model)
        x = tiny_splits.test.images
        return metrics.mean_kl(predict_proba(fp_model, x), predict_proba(victim.deployed, x))

    assert kl_to_teacher(alpha) > 1.2 * kl_to_teacher(0.0)


def test_the_teacher_stays_frozen(tiny_splits, fp_model):
    before = {k: v.clone() for k, v in fp_model.state_dict().items()}
    build_victim(VictimConfig(method="divqat", alpha=1.0, **BASE), tiny_splits, fp_model)
    assert all(torch.equal(before[k], v) for k, v in fp_model.state_dict().items())
