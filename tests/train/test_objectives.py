"""DivQAT's loss as a module on plain tensors, against values computed by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from divqat.configs import DivQATConfig
from divqat.train import DivQAT

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
TEACHER = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
LABELS = torch.tensor([0, 1])


def by_hand_ce_and_kl():
    """CE and KL(teacher || student), averaged over the two rows, with math only."""
    ce = kl = 0.0
    for logits, p, y in zip(LOGITS.tolist(), TEACHER.tolist(), LABELS.tolist(), strict=True):
        log_z = math.log(sum(math.exp(v) for v in logits))
        log_q = [v - log_z for v in logits]
        ce += -log_q[y] / 2
        kl += sum(pi * (math.log(pi) - lq) for pi, lq in zip(p, log_q, strict=True)) / 2
    return ce, kl


def test_the_loss_is_ce_minus_alpha_kl_plus_distill_kl_by_hand():
    ce, kl = by_hand_ce_and_kl()
    plain = DivQAT(alpha=0.0, beta=0.0, distill=0.0)(LOGITS, TEACHER, LABELS)
    assert plain.item() == pytest.approx(ce, abs=1e-6)
    assert plain.item() == pytest.approx(F.cross_entropy(LOGITS, LABELS).item(), abs=1e-6)
    paper = DivQAT(alpha=0.5, divergence="kl", non_target=False, beta=0.0, distill=0.0)
    assert paper(LOGITS, TEACHER, LABELS).item() == pytest.approx(ce - 0.5 * kl, abs=1e-6)
    distilled = DivQAT(alpha=0.0, beta=0.0, distill=3.0)(LOGITS, TEACHER, LABELS)
    assert distilled.item() == pytest.approx(ce + 3.0 * kl, abs=1e-6)


def test_the_warm_up_ramps_alpha_with_progress():
    ce, kl = by_hand_ce_and_kl()
    loss = DivQAT(alpha=1.0, divergence="kl", non_target=False, beta=0.0, distill=0.0, warmup=0.5)
    assert loss(LOGITS, TEACHER, LABELS, progress=0.25).item() == pytest.approx(ce - 0.5 * kl, abs=1e-6)
    assert loss(LOGITS, TEACHER, LABELS, progress=1.0).item() == pytest.approx(ce - kl, abs=1e-6)


def test_the_outlier_term_is_added_only_with_outliers_and_takes_the_config():
    config = DivQATConfig(alpha=0.0, beta=2.0, distill=0.0)
    loss = DivQAT(config)
    assert loss.config is config
    out_logits, out_teacher = torch.randn(4, 3, requires_grad=True), torch.full((4, 3), 1 / 3)
    without = loss(LOGITS, TEACHER, LABELS)
    with_outliers = loss(LOGITS, TEACHER, LABELS, out_logits, out_teacher)
    term = loss.loss.outlier_term(out_logits, {"outlier_teacher_probs": out_teacher})
    assert with_outliers.item() == pytest.approx(without.item() + term.item(), abs=1e-6) and term.item() != 0
    with_outliers.backward()
    assert out_logits.grad is not None and out_logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "args,match",
    [
        ((LOGITS, TEACHER[:, :2], LABELS), "must both be"),
        ((LOGITS, TEACHER, LABELS, torch.zeros(4, 3)), "need outlier_teacher_probs"),
        ((LOGITS, TEACHER, LABELS, torch.zeros(4, 3), torch.zeros(4, 2)), "need outlier_teacher_probs"),
    ],
)
def test_mismatched_tensors_are_one_line_errors(args, match):
    with pytest.raises(ValueError, match=match):
        DivQAT(alpha=0.0, beta=2.0)(*args)
