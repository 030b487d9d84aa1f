"""The thief's query pools."""

import torch

from divqat.data.pools import query_pool


def test_pools(tiny_splits, tiny_root):
    inside = query_pool("in", tiny_splits, tiny_root)
    assert torch.equal(inside.images, tiny_splits.thief_pool.images)
    ood = query_pool("ood", tiny_splits, tiny_root)  # Fashion-MNIST's pair: scikit-learn's digits
    assert ood.images.shape == (1797, 1, 28, 28)
    mixed = query_pool("mixed", tiny_splits, tiny_root)
    assert len(mixed) == 5 * len(inside)
    assert (mixed.labels == -1).sum() == 4 * len(inside)  # out-of-distribution images carry no victim class
    assert torch.equal(mixed.images[mixed.labels >= 0], inside.images)
