"""Experiment grids: YAML configs, a cached and resumable runner, and reports."""

from divqat.experiments.config import Experiment, load_experiment
from divqat.experiments.report import write_report
from divqat.experiments.runner import run_experiment

__all__ = ["Experiment", "load_experiment", "run_experiment", "write_report"]
