"""The plain loss every model without DivQAT trains on: FP victims, QAT, thieves' surrogates."""

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, batch: dict[str, Tensor], progress: float = 0.0) -> Tensor:
    """CE against class indices (victims) or probability vectors (thieves on soft labels);
    with "weights" in the batch, a weighted mean over its rows."""
    if "weights" not in batch:
        return F.cross_entropy(logits, batch["targets"])
    weights = batch["weights"]
    per_row = F.cross_entropy(logits, batch["targets"], reduction="none")
    return (per_row * weights).sum() / weights.sum().clamp_min(1e-12)
