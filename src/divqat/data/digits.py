"""scikit-learn's bundled handwritten digits: a real out-of-distribution query pool, no download."""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from divqat.data.imageset import ImageSet


def digits(size: int = 28, channels: int = 1) -> ImageSet:
    """The 1,797 8x8 digits, resized to size x size, pixels in [0, 1], repeated over channels."""
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    # MNIST-like framing: the digit fills the central 20x20 of a 28x28 image.
    inner = round(size * 20 / 28)
    pad = (size - inner) // 2
    images = F.interpolate(images, size=(inner, inner), mode="bilinear", align_corners=False)
    images = F.pad(images, (pad, size - inner - pad, pad, size - inner - pad)).clamp_(0, 1)
    return ImageSet(images.repeat(1, channels, 1, 1).contiguous(), torch.tensor(bunch.target))
