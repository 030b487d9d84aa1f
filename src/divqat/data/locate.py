"""Where a dataset's files are: --data-root, then $DIVQAT_DATA, then /usr/share/datasets."""

import os
from pathlib import Path

from divqat.data.registry import DatasetInfo
from divqat.errors import DivqatError

SYSTEM_ROOT = Path("/usr/share/datasets")
ENV_VAR = "DIVQAT_DATA"


def candidate_dirs(info: DatasetInfo, data_root: Path | None) -> list[Path]:
    """A root may hold the files directly or in a sub-folder named after the dataset."""
    roots = [data_root] if data_root is not None else []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]))
    roots.append(SYSTEM_ROOT)
    return [d for root in roots for d in (root / info.name, root)]


def holds(info: DatasetInfo, d: Path) -> bool:
    """Whether d holds the dataset: its sub-folder by name, a flat root by content. A flat root
    whose files are another dataset's is passed over; one whose files are nobody's is refused."""
    if not all((d / f).is_file() for f in info.files):
        return False
    if d.name == info.name or info.identify is None or info.identify(d):
        return True
    from divqat.data.registry import DATASETS

    if any(o.identify(d) for o in DATASETS.values() if o is not info and o.identify and o.files == info.files):
        return False
    raise DivqatError(
        f"{d} holds {info.name}'s file names but not its content (ambiguous: several datasets use these names); "
        f"put {info.name}'s files in {d / info.name}"
    )


def locate(info: DatasetInfo, data_root: Path | None = None) -> Path:
    if data_root is not None and not data_root.is_dir():
        raise DivqatError(f"data root {data_root} is not a directory")
    for d in candidate_dirs(info, data_root):
        if holds(info, d):
            return d
    hint = (
        "install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
        if info.name == "fashion-mnist"
        else f"run `divqat download {info.name} --data-root DIR`"
    )
    searched = ", ".join(str(d) for d in candidate_dirs(info, data_root))
    raise DivqatError(f"{info.name} not found (looked in {searched}); {hint}")
