"""In-memory image tensors: the whole dataset lives in RAM, so batches are index lookups."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageSet:
    """Images as float32 NCHW in [0, 1] (the deployment contract) with int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != torch.float32:
            raise ValueError(f"images must be float32 NCHW, got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | slice) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])

    def head(self, n: int | None) -> "ImageSet":
        return self if n is None or n >= len(self) else self.subset(slice(0, n))


def from_uint8(images: torch.Tensor, labels: torch.Tensor) -> ImageSet:
    """uint8 NCHW (or NHW, promoted to one channel) pixels to an ImageSet."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    return ImageSet(images.float().div_(255.0), labels.long())
