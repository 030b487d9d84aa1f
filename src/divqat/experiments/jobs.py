"""The job contract between the runner and its executors (local, Ray): what a job is, where it
writes, when it is done, and what an executor is handed. Executors import this module, never the
runner: the runner passes them the function that runs one job (`Batch.execute`).

A job's directory is `jobs/LEVEL-KEY`, KEY a hash of everything that determines its result
(its config and the keys of the jobs it needs), so a finished job is found again by any config
that needs it. It appears only when the job is complete (staged, then renamed).
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from divqat.files import METRICS, RESULT

LEVELS = ("fp", "victim", "attack")  # a job only depends on jobs of earlier levels
INDEX = "index.json"


@dataclass(frozen=True)
class Job:
    level: str
    key: str
    labels: dict  # what the report groups by: seed, victim (its name in the config), defense...
    spec: dict  # the VictimConfig, or the AttackConfig and defense, as plain data
    needs: tuple[str, ...] = ()  # keys of the jobs this one depends on (part of its hash)
    need_dirs: tuple[str, ...] = ()  # and their directories, whatever their level

    @property
    def directory(self) -> str:
        return f"{self.level}-{self.key}"


def make_job(level: str, labels: dict, spec: dict, needs: tuple[Job, ...] = (), data: str | None = None) -> Job:
    """`data`: a fingerprint of the user's own image folder the job reads, hashed with it (and so
    with every job that needs it): a changed folder is never a cached result."""
    keys = tuple(j.key for j in needs)
    material = {"level": level, "spec": spec, "needs": keys} | ({"data": data} if data else {})
    blob = json.dumps(material, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return Job(level, key, labels, spec, keys, tuple(j.directory for j in needs))


def result_file(job: Job) -> str:
    return RESULT if job.level == "attack" else METRICS


def is_done(out: Path, job: Job) -> bool:
    return (out / "jobs" / job.directory / result_file(job)).is_file()


# execute(job, out, data_root, threads) -> seconds: runs one job in the calling process.
Execute = Callable[[Job, Path, Path | None, int], float]


@dataclass(frozen=True)
class Batch:
    """What an executor runs: the unfinished jobs (dependencies first), where they write, and how."""

    todo: tuple[Job, ...]
    out: Path
    data_root: Path | None
    jobs: int  # at once (on each node, for Ray)
    plugins: tuple[str, ...]  # what every worker imports before its first job
    execute: Execute  # a module-level function, so that worker processes can be handed it
