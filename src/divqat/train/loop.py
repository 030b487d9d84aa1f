"""The one training loop: FP training, QAT, DivQAT and the thieves' surrogates all run here.

Data are in-memory tensors indexed by shuffled batches; the objective sees each batch's rows
of every tensor it was given (inputs, targets, cached teacher outputs). When the data hold
"outliers" (as many as inputs, paired by row) and the objective has an `outlier_term`, each step
adds that term on the batch's outliers, forwarded separately with the quantization observers
frozen: outliers must not widen the ranges the deployed model keeps for in-distribution inputs.

Progress goes to an optional callback (`progress(label, steps_done, total_steps, epoch_loss)`),
so that the loop imports no UI: the command line draws it as a bar (divqat/ui.py).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from divqat.errors import DivqatError
from divqat.quant.pt2e import outlier_forward, set_mode

Objective = Callable[[Tensor, dict[str, Tensor], float], Tensor]
Progress = Callable[[str, int, int, float | None], None]  # label, steps done, total steps, last epoch's loss


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"  # or "constant"
    seed: int = 0
    channels_last: bool = False  # NHWC memory layout: oneDNN's faster convolutions (same float32 math)

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise DivqatError(f"invalid training config: {self}")
        if self.schedule not in ("cosine", "constant"):
            raise DivqatError(f"unknown schedule {self.schedule!r}; choose cosine or constant")


@dataclass
class History:
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)


def fit(
    model: nn.Module,
    data: dict[str, Tensor],
    objective: Objective,
    config: TrainConfig,
    *,
    label: str = "train",
    progress: Progress | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> History:
    """Train `model` in place with Adam; the optimizer sees this model's parameters, so a QAT
    graph trains its own weights, never those of the FP model it was prepared from.
    `transform` (e.g. a thief's augmentation) is applied to each batch's inputs.

    Outliers (DivQAT's outlier term) are forwarded as the deployed model computes them: batch
    norm on its running statistics, observers frozen, and no buffer changed."""
    n = len(data["inputs"])
    device = next(model.parameters()).device
    steps_per_epoch = -(-n // config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
        if config.schedule == "cosine"
        else None
    )
    shuffle = torch.Generator().manual_seed(config.seed)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    history = History()
    set_mode(model, train=True)
    outlier_term = getattr(objective, "outlier_term", None) if "outliers" in data else None

    report = progress or (lambda *_: None)
    step = 0
    report(label, 0, total, None)
    for _ in range(config.epochs):
        start, loss_sum = time.perf_counter(), torch.zeros((), device=device)
        for index in torch.randperm(n, generator=shuffle).split(config.batch_size):
            batch = {k: v[index].to(device, non_blocking=True) for k, v in data.items()}
            inputs = transform(batch["inputs"]) if transform else batch["inputs"]
            if config.channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            at = step / max(total, 1)
            loss = objective(model(inputs), batch, at)
            if outlier_term is not None:
                with outlier_forward(model) as deployed:
                    loss = loss + outlier_term(deployed(batch["outliers"]), batch, at)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule:
                schedule.step()
            loss_sum += loss.detach() * len(index)
            step += 1
            if progress:
                report(label, step, total, history.epoch_loss[-1] if history.epoch_loss else None)
        history.epoch_seconds.append(time.perf_counter() - start)
        history.epoch_loss.append(loss_sum.item() / n)
        report(label, step, total, history.epoch_loss[-1])
    set_mode(model, train=False)
    return history


@torch.no_grad()
def predict_proba(model: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 1024) -> Tensor:
    """Softmax outputs of an in-process model (FP, prepared or converted), on the CPU."""
    if isinstance(model, nn.Module):
        set_mode(model, train=False)
        device = next(iter(model.parameters()), torch.zeros(())).device
    else:
        device = torch.device("cpu")
    out = [
        torch.softmax(model(images[i : i + batch_size].to(device)), -1).cpu() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)
