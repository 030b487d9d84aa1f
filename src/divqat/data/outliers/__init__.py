"""Outlier sources for DivQAT's outlier term: images a victim learns to answer misleadingly.

Each source is generated from nothing a thief uses: noise, drawn strokes and shapes, or the
victim's own training images taken apart. None reads the thief's split, the out-of-distribution
evaluation pools (scikit-learn's digits and photographs) or the validation pool
(tests/data/test_outliers.py checks both). `make_outliers("noise,strokes", ...)` mixes sources
in equal parts, deterministically per seed.
"""

from divqat.data.outliers import distort, noise, patches, shapes, strokes, views  # noqa: F401  (registers the sources)
from divqat.data.outliers.registry import OUTLIERS, make_outliers, parse_sources, register_outliers

__all__ = ["OUTLIERS", "make_outliers", "parse_sources", "register_outliers"]
