"""The benign shifts of issue 18's guard (data/augment.py): deterministic, made of the images given."""

import torch
import torch.nn.functional as F

from divqat.data.augment import benign_shifts


def test_benign_shifts_are_deterministic_and_made_of_the_images_given():
    g = torch.Generator().manual_seed(0)
    images = F.interpolate(torch.rand(64, 1, 7, 7, generator=g), size=28, mode="bilinear")  # smooth, like photos
    shifted = benign_shifts(images)
    assert shifted.shape == images.shape and float(shifted.min()) >= 0 and float(shifted.max()) <= 1
    assert torch.equal(shifted, benign_shifts(images)) and not torch.equal(shifted, benign_shifts(images, seed=1))
    assert not torch.equal(shifted, images)
    assert torch.equal(benign_shifts(torch.zeros(4, 1, 28, 28)), torch.zeros(4, 1, 28, 28))  # nothing drawn in

    def similarity(a, b):  # cosine of the centred images, per pair
        a, b = a.flatten(1), b.flatten(1)
        return F.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)).mean()

    # a moved image still looks like its own source, far more than like another image
    assert similarity(shifted, images) > similarity(shifted, images.roll(1, 0)) + 0.2
