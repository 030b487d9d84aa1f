"""The DivQAT objective against hand-computed values, and the bounds of each divergence."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divqat.errors import DivqatError
from divqat.train.divergences import DIVERGENCES, drop_class
from divqat.train.objectives import DivQATLoss, cross_entropy


def plain(**settings) -> DivQATLoss:
    """The paper's divergence term alone (the defaults are the protecting setting, with an outlier
    term and distillation): KL over all classes unless the test says otherwise."""
    return DivQATLoss(**{"divergence": "kl", "non_target": False, "beta": 0.0, "distill": 0.0, **settings})


# Worked by hand: logits (1, 0, -1) give q = e^z / sum e^z = (0.665241, 0.244728, 0.090031);
# label 0: CE = -ln 0.665241 = 0.407606;
# teacher p = (0.7, 0.2, 0.1): KL(p || q) = 0.7 ln(0.7/0.665241) + 0.2 ln(0.2/0.244728)
#                                        + 0.1 ln(0.1/0.090031) = 0.035652 - 0.040367 + 0.010502
#                                        = 0.005787.
LOGITS = torch.tensor([[1.0, 0.0, -1.0]])
TEACHER = torch.tensor([[0.7, 0.2, 0.1]])
BATCH = {"targets": torch.tensor([0]), "teacher_probs": TEACHER}
CE, KL = 0.407606, 0.005787


def test_paper_loss_is_ce_minus_alpha_kl_by_hand():
    loss = plain(alpha=2.0, divergence="kl", non_target=False)(LOGITS, BATCH)
    assert loss.item() == pytest.approx(CE - 2.0 * KL, abs=2e-6)  # 0.396032


def test_non_target_js_by_hand():
    # Without class 0: p~ = (0.2, 0.1)/0.3 = (2/3, 1/3); q~ = softmax(0, -1) = (0.731059, 0.268941);
    # m = (0.698863, 0.301137); JS = (KL(p~||m) + KL(q~||m)) / 2 = 0.002466.
    loss = plain(alpha=1.0, divergence="js", non_target=True)(LOGITS, BATCH)
    assert loss.item() == pytest.approx(CE - 0.002466, abs=2e-6)


def test_alpha_zero_is_cross_entropy():
    assert plain(alpha=0.0)(LOGITS, BATCH).item() == cross_entropy(LOGITS, BATCH).item()


def test_hinge_caps_and_floor_bounds_the_divergence():
    extreme = torch.tensor([[30.0, -30.0, -30.0]])  # q_2 ~ e^-60: unbounded KL would be ~6
    batch = {"targets": torch.tensor([0]), "teacher_probs": TEACHER}
    unbounded = plain(alpha=1.0, divergence="kl").divergence_per_sample(extreme, TEACHER, batch["targets"])
    floored = plain(alpha=1.0, divergence="kl", logq_floor=1e-3).divergence_per_sample(
        extreme, TEACHER, batch["targets"]
    )
    hinged = plain(alpha=1.0, divergence="kl", hinge=0.5).divergence_per_sample(extreme, TEACHER, batch["targets"])
    assert unbounded.item() > 15
    assert floored.item() <= -0.3 * math.log(1e-3) + 1e-5  # 0.3 of p's mass sits at the floor
    assert hinged.item() == pytest.approx(0.5)


def test_warmup_ramps_alpha():
    loss = plain(alpha=2.0, warmup=0.5)
    assert [loss.alpha_at(p) for p in (0.0, 0.25, 0.5, 1.0)] == [0.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("field,value", [("alpha", -0.1), ("alpha", float("nan")), ("hinge", -1.0), ("warmup", 2.0)])
def test_invalid_settings(field, value):
    with pytest.raises(DivqatError):
        plain(**{"alpha": 1.0, field: value})


def test_unknown_divergence():
    with pytest.raises(DivqatError, match="unknown divergence"):
        plain(alpha=1.0, divergence="wasserstein")


def test_drop_class_keeps_order():
    values = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    assert drop_class(values, torch.tensor([1, 2])).tolist() == [[0.0, 2.0], [3.0, 4.0]]


probabilities = st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4).filter(lambda v: sum(v) > 1e-3)
logits = st.lists(st.floats(-30.0, 30.0), min_size=4, max_size=4)


@settings(max_examples=200, deadline=None)
@given(p=probabilities, z=logits, name=st.sampled_from(sorted(DIVERGENCES)))
def test_divergences_are_finite_nonnegative_and_zero_at_equality(p, z, name):
    p = torch.tensor([p], dtype=torch.float64)
    p = p / p.sum()
    log_q = torch.log_softmax(torch.tensor([z], dtype=torch.float64), -1)
    d = DIVERGENCES[name](p, log_q)
    assert torch.isfinite(d).all() and d.item() >= -1e-9
    if name == "js":
        assert d.item() <= math.log(2) + 1e-9
    same = DIVERGENCES[name](log_q.exp(), log_q)
    assert abs(same.item()) < 1e-9


def test_gradients_are_finite_when_the_teacher_has_zeros():
    teacher = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    for name in DIVERGENCES:
        for non_target in (False, True):
            z = torch.tensor([[2.0, -1.0, 0.5, 0.0]], requires_grad=True)
            loss = plain(alpha=1.0, divergence=name, non_target=non_target)(
                z, {"targets": torch.tensor([0]), "teacher_probs": teacher}
            )
            loss.backward()
            assert torch.isfinite(z.grad).all(), (name, non_target)


@pytest.mark.parametrize("non_target", [False, True])
def test_js_is_finite_for_extreme_logits_in_float32(non_target):
    """m = (p + q) / 2 underflows to 0 where p_k = 0 and log q_k < -103; log m must not be -inf."""
    teacher = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    z = torch.tensor([[0.0, 200.0, -200.0, 50.0], [300.0, -300.0, 0.0, -150.0]], requires_grad=True)
    loss = plain(alpha=1.0, divergence="js", non_target=non_target)(
        z, {"targets": torch.tensor([0, 2]), "teacher_probs": teacher}
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    d = DIVERGENCES["js"](teacher, torch.log_softmax(z.detach(), -1))
    assert torch.isfinite(d).all() and (d <= math.log(2) + 1e-6).all()
