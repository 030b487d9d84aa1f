"""Training objectives: `objective(logits, batch, progress) -> loss`, progress in [0, 1].

`batch` holds the rows of the training tensors for this step: "inputs", "targets" (class indices
or probability vectors) and, for DivQAT, "teacher_probs" (the frozen FP model's softmax, cached).
"""

import math

import torch.nn.functional as F
from torch import Tensor

from divqat.configs import DivQATConfig
from divqat.train.divergences import drop_class, get_divergence, kl
from divqat.train.losses import cross_entropy
from divqat.train.outlier_losses import get_outlier_loss

__all__ = ["DivQATLoss", "cross_entropy"]


class DivQATLoss:
    """L = CE(y, f_q(x)) - alpha * D(f_fp(x) || f_q(x)) + beta * M(f_q(x_out), f_fp(x_out))
    [+ distill * KL(f_fp(x) || f_q(x))],
    averaged over the batch; x_out is a batch of outliers drawn alongside each training batch.

    Its settings are a `DivQATConfig` (divqat/configs.py, where each is explained), given whole
    or as keyword arguments: `DivQATLoss(config)` or `DivQATLoss(alpha=0.5, divergence="kl")`;
    settings not given are the config's defaults. The paper's form is divergence="kl",
    non_target=False, beta=0 and distill=0 (PRESETS["paper"]).
    """

    def __init__(self, config: DivQATConfig | None = None, **settings):
        if config is not None and settings:
            raise TypeError("give a DivQATConfig or keyword settings, not both")
        self.config = config if config is not None else DivQATConfig(**settings)

    def __getattr__(self, name: str):
        return getattr(self.__dict__["config"], name)  # alpha, beta, divergence... as the config has them

    def __repr__(self) -> str:
        return f"DivQATLoss({self.config})"

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
