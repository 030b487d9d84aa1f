"""The names and small JSON files of a divqat run directory, readable without torch (the report,
the runner's bookkeeping). The weights and models themselves are artifacts.py's."""

import json
from pathlib import Path

from divqat import __version__
from divqat.errors import DivqatError

CONFIG, FP, QUANT, ONNX, METRICS = "config.json", "fp.safetensors", "quant.safetensors", "model.onnx", "metrics.json"
RESULT = "result.json"  # an attack's measurements

MARKER = ".divqat"  # in every directory divqat writes as a run: only those are ever replaced or deleted


def mark(directory: Path, kind: str) -> None:
    write_json(directory / MARKER, {"kind": kind, "divqat_version": __version__})


def is_marked(directory: Path) -> bool:
    return (directory / MARKER).is_file()


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DivqatError(f"{path.parent} is not a divqat run directory (no {path.name})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DivqatError(f"{path}: unreadable ({e})") from None


def check_placeable(out: Path) -> None:
    """A run is written beside its --out and renamed into place: never the current directory, one
    of its parents, the home directory or the file system's root."""
    here, target = Path.cwd().resolve(), out.resolve()
    if not target.name or target == here or target in here.parents or target == Path.home().resolve():
        raise DivqatError(f"--out {out} is the current, a parent or the home directory; name a new one (e.g. runs/x)")
