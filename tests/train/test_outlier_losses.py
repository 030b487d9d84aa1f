"""The outlier term of DivQAT: each form by hand, beta 0 is DivQAT without it, bit for bit."""

import pytest
import torch
import torch.nn.functional as F

from divqat.train.divergences import get_divergence
from divqat.train.objectives import DivQATLoss
from divqat.train.outlier_losses import OUTLIER_LOSSES, derangement

# Worked by hand: outlier logits (1, 0, -1) give q = (0.665241, 0.244728, 0.090031),
# log q = (-0.407606, -1.407606, -2.407606); the teacher's answer p = (0.7, 0.2, 0.1), argmax 0.
LOGITS = torch.tensor([[1.0, 0.0, -1.0]])
TEACHER = torch.tensor([[0.7, 0.2, 0.1]])
BY_HAND = {
    # -ln(1 - q_0) = -ln(0.334759) = 1.094344
    "misinformation": 1.094344,
    # K // 2 = 1: p moves to (0.1, 0.7, 0.2); CE = 0.1 * 0.407606 + 0.7 * 1.407606 + 0.2 * 2.407606
    "shift": 1.507606,
    # -(ln q_0 + ln q_1 + ln q_2) / 3 = 4.222818 / 3
    "uniform": 1.407606,
    # the least likely class of p is 2: -ln q_2
    "argmin": 2.407606,
    # -KL(p || q) = -(0.7 ln(0.7/0.665241) + 0.2 ln(0.2/0.244728) + 0.1 ln(0.1/0.090031)) = -0.005787
    "divergence": -0.005787,
}


@pytest.mark.parametrize("name", sorted(OUTLIER_LOSSES))
def test_each_outlier_loss_by_hand(name):
    assert OUTLIER_LOSSES[name](LOGITS, TEACHER, "kl").item() == pytest.approx(BY_HAND[name], abs=2e-6)


def test_divergence_form_uses_the_configured_divergence():
    # JS(p || q) with m = (0.682620, 0.222364, 0.095015): (KL(p||m) + KL(q||m)) / 2 = 0.001479
    assert OUTLIER_LOSSES["divergence"](LOGITS, TEACHER, "js").item() == pytest.approx(-0.001479, abs=2e-6)


def test_outlier_term_is_beta_times_the_mean():
    loss = DivQATLoss(alpha=0.0, beta=2.5, outlier_loss="uniform")
    batch = {"outlier_teacher_probs": TEACHER.repeat(2, 1)}
    assert loss.outlier_term(LOGITS.repeat(2, 1), batch).item() == pytest.approx(2.5 * 1.407606, abs=1e-5)


def test_distill_adds_kl_to_the_teacher_by_hand():
    # CE = 0.407606 and KL(p || q) = 0.005787 (tests/train/test_divergences.py): 0.407606 + 2 * 0.005787
    batch = {"targets": torch.tensor([0]), "teacher_probs": TEACHER}
    loss = DivQATLoss(alpha=0.0, beta=0.0, distill=2.0)(LOGITS, batch)
    assert loss.item() == pytest.approx(0.419180, abs=2e-6)


def test_derangement_moves_every_class():
    probs = torch.eye(10)
    assert (derangement(probs).argmax(-1) != torch.arange(10)).all()


@pytest.mark.parametrize("name", sorted(OUTLIER_LOSSES))
def test_outlier_losses_are_bounded_below_and_finite(name):
    logits = torch.tensor([[80.0, -80.0, 0.0], [-80.0, 80.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    value = OUTLIER_LOSSES[name](logits, teacher, "kl")
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(logits.grad).all()
    assert (value >= -torch.log(torch.tensor(3.0)) - 1e-6).all()


def quantized_weights(tiny_splits, **overrides):
    from divqat.configs import VictimConfig
    from divqat.train.victim import quantize, train_fp

    base = dict(method="divqat", alpha=0.5, distill=0.0, epochs=1, fp_epochs=1, batch_size=128, lr=1e-3, seed=3,
                train_limit=600)  # fmt: skip
    config = VictimConfig(**{**base, **overrides})
    fp, _ = train_fp(config, tiny_splits)
    victim = quantize(config, tiny_splits, fp)
    return {k: v.clone() for k, v in victim.prepared.state_dict().items()}, victim, config


def test_beta_zero_is_divqat_without_the_term_bit_for_bit(tiny_splits):
    """beta 0 trains exactly the weights of the objective as it was before the outlier term
    (CE - alpha * D, written out here), whatever outlier sources are named."""
    from divqat.quant import prepare
    from divqat.train import TrainConfig, fit, predict_proba
    from divqat.train.victim import quant_config, train_fp

    ours, _, config = quantized_weights(tiny_splits, beta=0.0, outliers="distort")
    again, _, _ = quantized_weights(tiny_splits, beta=0.0, outliers="noise,strokes")
    assert all(torch.equal(ours[k], again[k]) for k in ours)

    def before(logits, batch, progress):  # the DivQAT loss of the previous release
        p = batch["teacher_probs"]
        keep = torch.ones_like(p, dtype=torch.bool).scatter_(1, batch["targets"].unsqueeze(1), False)
        p = p[keep].view(len(p), -1)
        p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
        log_q = F.log_softmax(logits[keep].view(len(p), -1), -1)
        return F.cross_entropy(logits, batch["targets"]) - 0.5 * get_divergence("js")(p, log_q).mean()

    fp, _ = train_fp(config, tiny_splits)
    train = tiny_splits.victim_train.head(config.train_limit)
    torch.manual_seed(config.seed)
    prepared = prepare(fp, tiny_splits.input_shape, quant_config(config), qat=True)
    data = {"inputs": train.images, "targets": train.labels, "teacher_probs": predict_proba(fp, train.images)}
    fit(prepared, data, before, TrainConfig(1, 128, 1e-3, seed=config.seed))
    reference = prepared.state_dict()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)


def test_outlier_term_moves_answers_on_outliers_only(tiny_splits):
    """With beta > 0 the victim's answers on (held-out) outliers leave the FP model's; the
    quantization ranges are those of the in-distribution data (observers frozen on outliers)."""
    from divqat import metrics
    from divqat.data.outliers import make_outliers
    from divqat.train import predict_proba

    plain, plain_victim, _ = quantized_weights(tiny_splits, beta=0.0, epochs=4)
    pushed, pushed_victim, _ = quantized_weights(tiny_splits, beta=3.0, outlier_loss="divergence", epochs=4)
    held_out = make_outliers("noise,strokes,shapes", tiny_splits.victim_train.images, 256, seed=99)
    fp_answers = predict_proba(plain_victim.fp, held_out)
    kl_plain = metrics.mean_kl(fp_answers, predict_proba(plain_victim.deployed, held_out))
    kl_pushed = metrics.mean_kl(fp_answers, predict_proba(pushed_victim.deployed, held_out))
    assert kl_pushed > 3 * kl_plain, (kl_pushed, kl_plain)
    ranges = [k for k in plain if k.endswith(("min_val", "max_val")) and plain[k].numel() == 1]
    assert ranges and all(torch.allclose(plain[k], pushed[k], rtol=0.5, atol=0.5) for k in ranges)
