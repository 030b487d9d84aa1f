"""Console output: rich progress bars that disappear in quiet mode and when not on a terminal.

The core reports training progress through a callback (train/loop.py: `progress(label, done,
total, loss)`); `progress_reporter` is the command line's: one bar per label."""

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextmanager
def progress_bar(quiet: bool = False):
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    )
    with bar:
        yield bar


@contextmanager
def progress_reporter(quiet: bool = False):
    """A training-progress callback drawing a bar per label (None when quiet)."""
    if quiet:
        yield None
        return
    with progress_bar() as bar:
        tasks = {}

        def report(label: str, done: int, total: int, loss: float | None) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            description = label if loss is None else f"{label} loss {loss:.4f}"
            bar.update(tasks[label], completed=done, total=total, description=description)

        yield report
