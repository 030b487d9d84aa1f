"""A user's own registrations (models, datasets, defenses, attacks, outlier sources, pools),
imported by name or file before anything is looked up: `divqat --plugin my_models ...`, or
`plugins: [my_models]` in an experiment config. Every module loaded is remembered, so the
runner's worker processes import the same ones."""

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

from divqat.errors import DivqatError

LOADED: list[str] = []  # in load order; what worker processes must import too


def load_plugin(name: str) -> None:
    if name in LOADED:
        return
    try:
        if name.endswith(".py"):
            path = Path(name).resolve()
            if not path.is_file():
                raise DivqatError(f"plugin {name}: no such file")
            spec = importlib.util.spec_from_file_location(f"divqat_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(name)
    except DivqatError:
        raise
    except Exception as e:  # the plugin's own error: reported in one line, with its type
        raise DivqatError(f"plugin {name} failed to import ({type(e).__name__}: {e})") from None
    LOADED.append(name)


def load_plugins(names) -> None:
    for name in names:
        load_plugin(name)


def quiet_warnings() -> None:
    """torch.export's FutureWarnings (tree-spec pickling) are torch's internals, not the user's."""
    warnings.filterwarnings("ignore", category=FutureWarning)


def init_worker(plugins: tuple[str, ...]) -> None:
    """A runner worker process: the parent's warning filters and plugins (spawned processes
    start from scratch)."""
    quiet_warnings()
    load_plugins(plugins)
