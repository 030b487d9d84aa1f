"""Training objectives: `objective(logits, batch, progress) -> loss`, progress in [0, 1].

`batch` holds the rows of the training tensors for this step: "inputs", "targets" (class indices
or probability vectors) and, for DivQAT, "teacher_probs" (the frozen FP model's softmax, cached).
"""

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from divqat.errors import DivqatError
from divqat.train.divergences import drop_class, get_divergence, kl
from divqat.train.outlier_losses import get_outlier_loss


def cross_entropy(logits: Tensor, batch: dict[str, Tensor], progress: float = 0.0) -> Tensor:
    """CE against class indices (victims) or probability vectors (thieves on soft labels);
    with "weights" in the batch, a weighted mean over its rows."""
    if "weights" not in batch:
        return F.cross_entropy(logits, batch["targets"])
    weights = batch["weights"]
    per_row = F.cross_entropy(logits, batch["targets"], reduction="none")
    return (per_row * weights).sum() / weights.sum().clamp_min(1e-12)


@dataclass(frozen=True)
class DivQATLoss:
    """L = CE(y, f_q(x)) - alpha * D(f_fp(x) || f_q(x)) + beta * M(f_q(x_out), f_fp(x_out))
    [+ distill * KL(f_fp(x) || f_q(x))],
    averaged over the batch; x_out is a batch of outliers drawn alongside each training batch.

    The paper's form is divergence="kl", non_target=False, beta=0 and no bound. The options:
    - non_target: D over the K-1 classes other than the true one, each side renormalised, so
      the true class's probability is left to CE and only the "dark knowledge" is scrambled.
    - logq_floor: clamp log q at log(logq_floor) inside D, so D stops growing as q_k -> 0.
    - hinge: per-sample min(D, hinge): stop pushing a sample once it is that far from the teacher.
    - warmup: alpha (and beta) ramp linearly from 0 over this fraction of training.
    - beta, outlier_loss: the outlier term (train/outlier_losses.py); beta=0 is DivQAT without it.
    - distill: + distill * KL(f_fp(x) || f_q(x)) on the training images: distillation from the
      FP model, so that in-distribution answers stay close to it while outliers are answered
      misleadingly (0: off; it pulls the opposite way to alpha).
    """

    alpha: float
    divergence: str = "kl"
    non_target: bool = False
    logq_floor: float = 0.0
    hinge: float = 0.0
    warmup: float = 0.0
    beta: float = 0.0
    outlier_loss: str = "divergence"
    distill: float = 0.0

    def __post_init__(self):
        get_divergence(self.divergence)
        get_outlier_loss(self.outlier_loss)
        for name in ("alpha", "logq_floor", "hinge", "warmup", "beta", "distill"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise DivqatError(f"{name} must be a finite number >= 0, got {value}")
        if self.logq_floor >= 1 or self.warmup > 1:
            raise DivqatError("logq_floor must be < 1 and warmup <= 1")

    def ramp(self, progress: float) -> float:
        return min(1.0, progress / self.warmup) if self.warmup else 1.0

    def alpha_at(self, progress: float) -> float:
        return self.alpha * self.ramp(progress)

    def divergence_per_sample(self, logits: Tensor, teacher_probs: Tensor, labels: Tensor) -> Tensor:
        p = teacher_probs
        if self.non_target:
            p = drop_class(p, labels)
            p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
            logits = drop_class(logits, labels)
        log_q = F.log_softmax(logits, dim=-1)
        if self.logq_floor:
            log_q = log_q.clamp_min(math.log(self.logq_floor))
        d = get_divergence(self.divergence)(p, log_q)
        return d.clamp_max(self.hinge) if self.hinge else d

    def __call__(self, logits: Tensor, batch: dict[str, Tensor], progress: float = 0.0) -> Tensor:
        labels = batch["targets"]
        loss = F.cross_entropy(logits, labels)
        if self.alpha:
            d = self.divergence_per_sample(logits, batch["teacher_probs"], labels)
            loss = loss - self.alpha_at(progress) * d.mean()
        if self.distill:
            loss = loss + self.distill * kl(batch["teacher_probs"], F.log_softmax(logits, -1)).mean()
        return loss

    def outlier_term(self, outlier_logits: Tensor, batch: dict[str, Tensor], progress: float = 0.0) -> Tensor:
        """beta * M on the batch's outliers ("outliers" and their "outlier_teacher_probs")."""
        m = get_outlier_loss(self.outlier_loss)(outlier_logits, batch["outlier_teacher_probs"], self.divergence)
        return self.beta * self.ramp(progress) * m.mean()
