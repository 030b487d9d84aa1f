"""The black-box victim: what a thief holds, and the books kept behind it.

`BlackBoxVictim` answers batches of images with probability vectors from any backend (FP,
in-process int8, ONNX, a served model: anything `images -> probabilities`), after the output
defenses in order, counts queries and the time spent answering, and refuses any batch that
would pass the budget. An attack never sees it: it gets the victim's `oracle()`, an object with
`query(images)` and `remaining` and nothing else - no backend, no defenses, no budget to raise.

(In-process Python cannot be sandboxed: code that digs through interpreter internals can reach
anything. The oracle keeps honest and careless attacks inside the threat model; a thief you do
not trust queries a served victim, `--backend http`, where the budget is the server's.)
"""

import time
from collections.abc import Callable, Sequence

from torch import Tensor

from divqat.defenses import Defense
from divqat.defenses.dark_knowledge import Scramble
from divqat.defenses.watermark import Record, Watermark
from divqat.errors import DivqatError

Backend = Callable[[Tensor], Tensor]  # float32 NCHW in [0, 1] -> probabilities (N, K)


class BudgetExceeded(DivqatError):
    pass


def defend(probs: Tensor, images: Tensor, defenses: Sequence[Defense], record: Record | None = None) -> Tensor:
    """The victim's answers as a client receives them: each defense in order. When `record` is
    kept (what this account was told: anything with `add(images, marks)` and `orders`), a
    watermark's marks on this batch go to it - selected once, for the record and the answer
    alike - and so do scramble's orders, on the rows no later defense changed."""
    scrambled, own = None, probs
    for defense in defenses:
        if record is not None and isinstance(defense, Watermark):
            marks = defense.select(probs, images, own=own)
            record.add(images, marks)
            probs = defense.apply(probs, marks)
        elif record is not None and isinstance(defense, Scramble):
            natural = probs
            record.orders.per = defense.per  # which test reads these orders
            probs, names = defense.answer(probs, images)
            scrambled = natural, probs, names
        else:
            probs = defense(probs, images)
    if scrambled is not None:
        natural, told, names = scrambled
        same = (probs == told).all(1).cpu()
        record.orders.add(images[same], [n for n, s in zip(names, same.tolist(), strict=True) if s],
                          natural[same], probs[same])  # fmt: skip
    return probs


class Oracle:
    """The victim as an attack sees it: `query(images) -> probabilities` (each image one query of
    the budget; a batch past it is refused whole) and `remaining`. Read-only, no other state."""

    __slots__ = ()

    def query(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def remaining(self) -> int:
        raise NotImplementedError


class BlackBoxVictim:
    """The defender's side of the black box: backend, defenses, budget and the books."""

    def __init__(self, backend: Backend, budget: int, defenses: Sequence[Defense] = (), record: Record | None = None):
        if budget <= 0:
            raise DivqatError(f"budget must be a positive number of queries, got {budget}")
        self._backend, self._budget, self._defenses = backend, int(budget), tuple(defenses)
        self._queries, self._seconds = 0, 0.0
        self.record = Record() if record is None else record  # what a watermark told this account

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def queries(self) -> int:
        return self._queries

    @property
    def seconds(self) -> float:
        """Time spent answering, defenses included."""
        return self._seconds

    @property
    def remaining(self) -> int:
        return self._budget - self._queries

    def query(self, images: Tensor) -> Tensor:
        n = len(images)
        if n > self.remaining:
            raise BudgetExceeded(
                f"query budget exhausted: {n} more queries asked, {self.remaining} of {self._budget} left"
            )
        start = time.perf_counter()
        probs = defend(self._backend(images), images, self._defenses, self.record)
        self._seconds += time.perf_counter() - start
        self._queries += n
        return probs.detach()

    def oracle(self) -> Oracle:
        """What the thief is handed: this victim's `query` and `remaining`, nothing else."""
        books = self

        class VictimOracle(Oracle):
            __slots__ = ()

            def query(self, images: Tensor) -> Tensor:
                return books.query(images)

            @property
            def remaining(self) -> int:
                return books.remaining

        return VictimOracle()
