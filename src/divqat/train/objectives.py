"""Training objectives: `objective(logits, batch, progress) -> loss`, progress in [0, 1].

`batch` holds the rows of the training tensors for this step: "inputs", "targets" (class indices
or probability vectors) and, for DivQAT, "teacher_probs" (the frozen FP model's softmax, cached).
"""

import math

import torch.nn.functional as F
from torch import Tensor, nn

from divqat.configs import DivQATConfig
from divqat.train.divergences import drop_class, get_divergence, kl
from divqat.train.losses import cross_entropy
from divqat.train.outlier_losses import get_outlier_loss

__all__ = ["DivQAT", "DivQATLoss", "cross_entropy"]


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


class DivQAT(nn.Module):
    """DivQAT's loss for your own QAT loop, on plain tensors:

        loss = DivQAT(alpha=0.0, beta=2.0, distill=3.0)(          # or DivQAT(config)
            student_logits,         # (B, K) the QAT model's logits on the batch
            teacher_probs,          # (B, K) the frozen FP model's softmax on the same batch
            labels,                 # (B,) class indices
            outlier_logits,         # optional (B', K): the QAT model's logits on outliers,
                                    #   from `divqat.quant.outlier_forward(model)`
            outlier_teacher_probs,  # (B', K) the FP model's softmax on those outliers
            progress=1.0,           # share of training done, in [0, 1]: the warm-up ramp
        )                           # -> a scalar tensor to .backward()

    = CE(labels, student) - alpha * D(teacher || student) [+ distill * KL(teacher || student)]
      + beta * M(outlier student, outlier teacher); the settings are a `DivQATConfig`
    (divqat/configs.py), the same that `divqat train` uses. Without outliers the outlier term
    is left out (beta is then unused).
    """

    def __init__(self, config: DivQATConfig | None = None, **settings):
        super().__init__()
        self.loss = DivQATLoss(config, **settings)

    @property
    def config(self) -> DivQATConfig:
        return self.loss.config

    def forward(
        self,
        student_logits: Tensor,
        teacher_probs: Tensor,
        labels: Tensor,
        outlier_logits: Tensor | None = None,
        outlier_teacher_probs: Tensor | None = None,
        progress: float = 1.0,
    ) -> Tensor:
        if student_logits.shape != teacher_probs.shape or student_logits.ndim != 2:
            raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher probabilities "
                             f"{tuple(teacher_probs.shape)} must both be (batch, classes)")  # fmt: skip
        batch = {"targets": labels, "teacher_probs": teacher_probs}
        loss = self.loss(student_logits, batch, progress)
        if outlier_logits is not None and self.config.beta:
            if outlier_teacher_probs is None or outlier_teacher_probs.shape != outlier_logits.shape:
                raise ValueError("outlier_logits need outlier_teacher_probs of the same shape")
            loss = loss + self.loss.outlier_term(
                outlier_logits, {"outlier_teacher_probs": outlier_teacher_probs}, progress
            )
        return loss
