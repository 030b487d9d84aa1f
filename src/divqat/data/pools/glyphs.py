"""The validation pool: DivQAT's settings (beta, the outlier mix) are chosen on it, never on the
evaluation pools. Half letters (A-Z, a-z in the 7 font families matplotlib ships, never a digit),
half crops of matplotlib's sample pictures (Grace Hopper's portrait, a gift box): nothing of
scikit-learn's digits or photographs, nothing of the victim's dataset."""

from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from divqat.data.augment import sample_with_augmentation
from divqat.data.imageset import ImageSet
from divqat.data.pools.photos import random_crops
from divqat.data.pools.registry import register_pool
from divqat.data.splits import Splits

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FONTS = ("DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono", "STIXGeneral", "cmr10", "cmss10", "cmtt10")
PICTURES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
SIZE = 10_000


@cache
def letters() -> torch.Tensor:
    """(364, 1, 64, 64) white letters on black, each font and letter once."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = []
    for font in FONTS:
        for letter in LETTERS:
            figure = Figure(figsize=(1, 1), dpi=64, facecolor="black")
            figure.text(0.5, 0.5, letter, color="white", fontsize=44, family=font, ha="center", va="center")
            canvas = FigureCanvasAgg(figure)
            canvas.draw()
            images.append(np.asarray(canvas.buffer_rgba())[..., 0].copy())
    return torch.from_numpy(np.stack(images)).float().div_(255).unsqueeze(1)


def framed(glyphs: torch.Tensor, size: int) -> torch.Tensor:
    """Each glyph cropped to its ink and fitted into the central 20/28 of a size x size image."""
    out = torch.zeros(len(glyphs), 1, size, size)
    inner = round(size * 20 / 28)
    for i, glyph in enumerate(glyphs):
        rows, cols = (glyph[0] > 0.1).any(1).nonzero(), (glyph[0] > 0.1).any(0).nonzero()
        crop = glyph[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        h, w = crop.shape[1:]
        scale = inner / max(h, w)
        th, tw = max(1, round(h * scale)), max(1, round(w * scale))
        crop = F.interpolate(crop.unsqueeze(0), size=(th, tw), mode="bilinear", antialias=True)[0]
        top, left = (size - th) // 2, (size - tw) // 2
        out[i, :, top : top + th, left : left + tw] = crop
    return out.clamp_(0, 1)


def sample_pictures() -> list[torch.Tensor]:
    root = Path(matplotlib.get_data_path()) / "sample_data"
    pictures = []
    for name in PICTURES:
        array = matplotlib.image.imread(root / name)
        array = array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0)
        pictures.append(torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1))
    return pictures


@register_pool("validation")
def validation(splits: Splits, data_root: Path | None) -> ImageSet:
    channels, size, _ = splits.input_shape
    g = torch.Generator().manual_seed(0)
    glyphs = sample_with_augmentation(framed(letters(), size), SIZE // 2, g).repeat(1, channels, 1, 1)
    crops = random_crops(sample_pictures(), SIZE - SIZE // 2, size, channels, seed=1)
    return ImageSet(torch.cat([glyphs, crops]), torch.full((SIZE,), -1))
