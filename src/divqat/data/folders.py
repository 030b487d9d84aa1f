"""Your own images from folders, in the layout torchvision's ImageFolder made familiar.

    --dataset folder:data/mine   data/mine/train/<class>/*.png, data/mine/test/<class>/*.jpg
    --pool folder:data/web       data/web/**/*.png: the thief's unlabelled images

PNG and JPEG (also .bmp, .gif, .webp) through Pillow. Classes are the train/ sub-folders in
sorted order (label 0 is the first); test/ may hold a subset of them. The rule that makes every
image the victim's shape: converted to grayscale (Pillow's "L", ITU-R 601-2 luma) when the
victim has one channel, else to RGB; centre-cropped to a square; resized to the side with
Pillow's bilinear filter (antialiased when shrinking). A dataset has one channel when every
training image is grayscale (else three) and the side its training images' shorter sides most
often have. An image more than twice as wide as high (or high as wide), which the crop would
cut by more than half, is refused, as is any file Pillow cannot read: the error names it.
"""

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from divqat.data.imageset import ImageSet
from divqat.errors import DivqatError

PREFIX = "folder:"
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def is_folder(name: str) -> bool:
    return name.startswith(PREFIX)


def folder_path(name: str) -> Path:
    path = Path(name[len(PREFIX) :])
    if not path.is_dir():
        raise DivqatError(f"{name}: no such directory")
    return path


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def open_image(path: Path):
    """The image at `path`, decoded now (Pillow opens lazily), or a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DivqatError(f"{path}: not a readable image ({type(e).__name__})") from None


def to_tensor(image, path: Path, channels: int, side: int) -> torch.Tensor:
    """One image as float32 CHW in [0, 1] of the victim's shape, by the module's rule."""
    from PIL import Image

    width, height = image.size
    if max(width, height) > 2 * min(width, height):
        raise DivqatError(f"{path}: {width}x{height} is more than twice as long as wide; crop it to the subject")
    image = image.convert("L" if channels == 1 else "RGB")
    short = min(width, height)
    left, top = (width - short) // 2, (height - short) // 2
    image = image.crop((left, top, left + short, top + short)).resize((side, side), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32).reshape(side, side, channels) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def class_files(split: Path) -> dict[str, list[Path]]:
    if not split.is_dir():
        raise DivqatError(f"{split}: missing (a folder dataset has train/ and test/, one sub-folder per class)")
    classes = {d.name: image_files(d) for d in sorted(split.iterdir()) if d.is_dir()}
    if not classes:
        raise DivqatError(f"{split}: no class sub-folders")
    for name, files in classes.items():
        if not files:
            raise DivqatError(f"{split / name}: no images ({', '.join(SUFFIXES)})")
    return classes


def read_folder_dataset(name: str) -> tuple[ImageSet, ImageSet, list[str]]:
    """(train, test, class names) of `folder:PATH`."""
    root = folder_path(name)
    train_files, test_files = class_files(root / "train"), class_files(root / "test")
    classes = list(train_files)
    if len(classes) < 2:
        raise DivqatError(f"{root / 'train'}: one class; a classifier needs at least two")
    unknown = sorted(set(test_files) - set(classes))
    if unknown:
        raise DivqatError(f"{root / 'test' / unknown[0]}: a class that train/ does not have")
    opened = {f: open_image(f) for files in train_files.values() for f in files}
    channels = 1 if all(image.mode in GRAY_MODES for image in opened.values()) else 3
    sides = Counter(min(image.size) for image in opened.values())
    side = max(sides.items(), key=lambda item: (item[1], -item[0]))[0]

    def image_set(files_of: dict[str, list[Path]]) -> ImageSet:
        pairs = [(f, classes.index(c)) for c, files in files_of.items() for f in files]
        images = [to_tensor(opened.get(f) or open_image(f), f, channels, side) for f, _ in pairs]
        return ImageSet(torch.stack(images), torch.tensor([label for _, label in pairs]))

    return image_set(train_files), image_set(test_files), classes


def read_folder_pool(name: str, input_shape: tuple[int, int, int]) -> ImageSet:
    """The images under `folder:PATH` (any depth), unlabelled (-1), in the victim's shape."""
    root = folder_path(name)
    files = image_files(root)
    if not files:
        raise DivqatError(f"{root}: no images ({', '.join(SUFFIXES)})")
    channels, side, _ = input_shape
    images = torch.stack([to_tensor(open_image(f), f, channels, side) for f in files])
    return ImageSet(images, torch.full((len(files),), -1))


def fingerprint(name: str) -> str:
    """What a folder holds, for a job's hash: every image's path and bytes (a changed folder is
    a new dataset, never a cached result of the old one)."""
    root = folder_path(name)
    digest = hashlib.sha256()
    for path in image_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]
