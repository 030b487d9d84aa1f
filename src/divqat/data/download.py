"""Checksum-verified download for users with internet access."""

import hashlib
import urllib.request
from pathlib import Path

from divqat.data.registry import DatasetInfo
from divqat.errors import DivqatError


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, md5: str, dest: Path) -> Path:
    """Download to a temporary name, verify, then rename: a bad download never looks complete."""
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise DivqatError(f"download of {url} failed ({e})") from None
    got = md5sum(partial)
    if got != md5:
        partial.unlink()
        raise DivqatError(f"{url}: checksum mismatch (md5 {got}, expected {md5})")
    partial.replace(dest)
    return dest


def download(info: DatasetInfo, root: Path) -> Path:
    if not info.downloads:
        raise DivqatError(f"{info.name} has no download source")
    target = root / info.name
    target.mkdir(parents=True, exist_ok=True)
    for item in info.downloads:
        fetch(item.url, item.md5, target / item.url.rsplit("/", 1)[-1])
    return target
