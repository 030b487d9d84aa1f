"""The local executor's pool, with stand-in jobs (no torch in the workers, so a second or two):
its workers serve every level, and a worker that dies costs only the jobs it broke."""

import os
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from divqat.experiments.jobs import Batch
from divqat.experiments.local_executor import run_jobs


@dataclass(frozen=True)
class Job:
    level: str
    key: str


class Tracker:
    """What the runner's Tracker is told, kept."""

    def __init__(self):
        self.errors, self.skipped = {}, set()

    def blocked(self, job) -> bool:
        return False

    def skip(self, job) -> None:
        self.skipped.add(job.key)

    def set_running(self, keys) -> None:
        pass

    def finished(self, job, error=None) -> None:
        self.errors[job.key] = error


def execute(job: Job, out: Path, data_root, threads: int) -> None:
    """Module level, so that spawned workers can be handed it: notes which process ran the job."""
    if job.key == "die":
        os._exit(1)
    (out / job.key).write_text(str(os.getpid()))


def run(tmp_path, jobs: tuple[Job, ...]) -> tuple[Tracker, dict[str, str]]:
    tracker = Tracker()
    run_jobs(Batch(jobs, tmp_path, None, 2, (), execute), tracker)
    return tracker, {p.name: p.read_text() for p in tmp_path.iterdir()}


def test_two_workers_run_every_level(tmp_path):
    levels = ("fp",) * 2 + ("victim",) * 3 + ("attack",) * 4
    tracker, pids = run(tmp_path, tuple(Job(level, f"{level}-{i}") for i, level in enumerate(levels)))
    assert len(pids) == 9 and all(e is None for e in tracker.errors.values())
    # One pool: at most its two workers ran the nine jobs (a pool per level would have spawned a
    # third at least), neither of them this process.
    assert len(set(pids.values())) <= 2 and os.getpid() not in map(int, pids.values())


def test_a_dead_worker_fails_its_level_and_the_next_level_runs_on_fresh_workers(tmp_path):
    tracker, pids = run(tmp_path, (Job("fp", "die"), Job("victim", "v"), Job("attack", "a")))
    assert isinstance(tracker.errors["die"], BrokenProcessPool)
    assert tracker.errors["v"] is None and tracker.errors["a"] is None and set(pids) == {"v", "a"}
