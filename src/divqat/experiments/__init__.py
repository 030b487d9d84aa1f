"""Experiment grids: YAML configs, a cached and resumable runner, and reports.

Imported lazily, so that a worker process importing the runner never loads matplotlib and the
report never loads torch."""

__all__ = ["Experiment", "load_experiment", "run_experiment", "write_report"]


def __getattr__(name: str):
    if name in ("Experiment", "load_experiment"):
        from divqat.experiments import config

        return getattr(config, name)
    if name == "run_experiment":
        from divqat.experiments.runner import run_experiment

        return run_experiment
    if name == "write_report":
        from divqat.experiments.report import write_report

        return write_report
    raise AttributeError(f"module 'divqat.experiments' has no attribute {name!r}")
