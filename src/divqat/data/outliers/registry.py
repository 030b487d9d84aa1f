"""The outlier-source registry: name -> generator(victim_train images, n, generator) -> images."""

from collections.abc import Callable

import torch

from divqat.errors import DivqatError
from divqat.registry import Registry

Source = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]  # float32 NCHW in [0, 1]

OUTLIERS = Registry("outlier source")
register_outliers = OUTLIERS.register


def parse_sources(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """ "noise,strokes" or ("noise", "strokes") -> validated names, in the order given."""
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [n.strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise DivqatError("name at least one outlier source")
    if len(set(items)) != len(items):
        raise DivqatError(f"outlier sources repeat: {', '.join(items)}")
    for name in items:
        OUTLIERS.lookup(name)
    return tuple(items)


def make_outliers(names, victim_train: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n outliers shaped like `victim_train`, equal parts of each source, shuffled; the same
    for the same seed. Only the victim's own training images are ever passed to a source."""
    sources = parse_sources(names)
    g = torch.Generator().manual_seed(seed)
    counts = [n // len(sources) + (i < n % len(sources)) for i in range(len(sources))]
    parts = [OUTLIERS[name](victim_train, count, g) for name, count in zip(sources, counts, strict=True)]
    images = torch.cat(parts).clamp_(0, 1).contiguous()
    return images[torch.randperm(n, generator=g)]
