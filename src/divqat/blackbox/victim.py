"""The black-box victim: the only thing an attack sees.

It answers batches of images with probability vectors from any backend (FP, in-process int8,
ONNX, and later a remote endpoint: anything `images -> probabilities`), after the output
defenses in order, counts queries, and refuses any batch that would exceed the budget.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from divqat.defenses import Defense
from divqat.errors import DivqatError

Backend = Callable[[Tensor], Tensor]  # float32 NCHW in [0, 1] -> probabilities (N, K)


class BudgetExceeded(DivqatError):
    pass


def defend(probs: Tensor, images: Tensor, defenses: Sequence[Defense]) -> Tensor:
    """The victim's answers as a client receives them: each defense in order."""
    for defense in defenses:
        probs = defense(probs, images)
    return probs


@dataclass
class BlackBoxVictim:
    backend: Backend
    budget: int
    defenses: Sequence[Defense] = ()
    queries: int = 0
    seconds: float = field(default=0.0)  # time spent answering, defenses included

    def __post_init__(self):
        if self.budget <= 0:
            raise DivqatError(f"budget must be a positive number of queries, got {self.budget}")

    @property
    def remaining(self) -> int:
        return self.budget - self.queries

    def query(self, images: Tensor) -> Tensor:
        n = len(images)
        if n > self.remaining:
            raise BudgetExceeded(
                f"query budget exhausted: {n} more queries asked, {self.remaining} of {self.budget} left"
            )
        start = time.perf_counter()
        probs = defend(self.backend(images), images, self.defenses)
        self.seconds += time.perf_counter() - start
        self.queries += n
        return probs.detach()
