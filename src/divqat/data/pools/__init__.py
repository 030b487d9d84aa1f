"""The thief's query pools, registered by name: `in` (the thief's split), `ood` (the dataset's
out-of-distribution pair, e.g. scikit-learn's digits for Fashion-MNIST), `mixed`, `photos`
(crops of scikit-learn's two photographs), `validation` (letters and matplotlib's sample
images: the pool DivQAT's settings are chosen on, kept apart from the two evaluation pools) and
`own` (empty: a thief with `in_seeds` that asks only about those images)."""

from divqat.data.pools import glyphs, photos, standard  # noqa: F401  (registers the pools)
from divqat.data.pools.registry import POOLS, query_pool, register_pool, with_in_distribution

__all__ = ["POOLS", "query_pool", "register_pool", "with_in_distribution"]
