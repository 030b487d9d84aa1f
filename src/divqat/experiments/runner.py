"""`divqat run`: plan an experiment's jobs, cached by hash, and hand the unfinished ones to an
executor: `local` (this machine: in process or a process pool) or `ray` (a Ray cluster).

A job's directory appears only when the job is complete (runs are staged and renamed), so a
runner killed at any point restarts with every finished job intact and recomputes none of them.
Every executor keeps that contract, runs a job only once its dependencies are done, and lets a
failed job stop nothing but the jobs that need it; the runner reports the failures in one line.
"""

import json
import time
from pathlib import Path

from divqat.errors import DivqatError
from divqat.experiments.config import Experiment, as_dict
from divqat.experiments.grid import expand
from divqat.experiments.jobs import INDEX, LEVELS, Batch, Job, is_done
from divqat.files import check_placeable, is_marked, mark, write_json
from divqat.plugins import LOADED, load_plugins
from divqat.ui import progress_bar

EXECUTORS = ("local", "ray")


def execute(job: Job, out: Path, data_root: Path | None, threads: int) -> float:
    """Run one job in this process; returns its wall time. (Executors are handed this function.)"""
    import torch

    from divqat import pipeline
    from divqat.configs import AttackConfig, VictimConfig
    from divqat.defenses import create_defense
    from divqat.extraction import run_attack

    torch.set_num_threads(threads)
    start = time.perf_counter()
    target = out / "jobs" / job.directory
    needs = [out / "jobs" / d for d in job.need_dirs]
    if job.level in ("fp", "victim"):
        fp_from = needs[0] if needs else None
        pipeline.train(VictimConfig(**job.spec), target, data_root=data_root, fp_from=fp_from, overwrite=True)
    else:
        config = AttackConfig(**job.spec["attack"])
        defense = job.spec["defense"]
        defenses = (create_defense(defense["name"], defense["params"], seed=config.seed),) if defense else ()
        run_attack(needs[0], config, target, data_root=data_root, defenses=defenses, overwrite=True)
    return time.perf_counter() - start


def write_index(out: Path, experiment: Experiment, jobs: list[Job]) -> None:
    """experiment.json, and index.json: every job's level, directory, labels and whole config."""
    index = [
        {"level": j.level, "directory": j.directory, "labels": j.labels, "spec": j.spec, "needs": list(j.need_dirs)}
        for j in jobs
    ]
    write_json(out / "experiment.json", as_dict(experiment))
    write_json(out / INDEX, index)


def prepare_results_directory(out: Path) -> None:
    """A new or empty directory becomes a (marked) results directory; a non-empty one must be one
    already (the marker, or an earlier version's experiment.json) - it is resumed, never cleared."""
    check_placeable(out)
    if out.exists() and not out.is_dir():
        raise DivqatError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (is_marked(out) or (out / "experiment.json").is_file()):
        raise DivqatError(f"{out} is not empty and not a divqat results directory; choose another --out")
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    if not is_marked(out):
        mark(out, "results")


def worker_plugins(experiment: Experiment) -> tuple[str, ...]:
    """The plugins loaded here, .py files as absolute paths: a worker may start in another directory."""
    names = (*LOADED, *(p for p in experiment.plugins if p not in LOADED))
    return tuple(str(Path(p).resolve()) if p.endswith(".py") else p for p in names)


class Tracker:
    """The driver's view of a grid: per level, jobs done / running / failed (a rich bar each);
    the failures and the jobs not run because one they need failed."""

    def __init__(self, bar, name: str, planned: list[Job], todo: list[Job]):
        self.bar, self.name, self.todo = bar, name, todo
        self.running: set[str] = set()
        self.failed: dict[str, tuple[Job, BaseException]] = {}
        self.skipped: set[str] = set()
        self.bars = {}  # a bar per level of the grid; jobs finished in an earlier run count as done
        for level in LEVELS:
            total = sum(j.level == level for j in planned)
            if total:
                self.bars[level] = bar.add_task("", total=total, completed=total - sum(j.level == level for j in todo))
        self.show()

    def blocked(self, job: Job) -> bool:
        return bool(set(job.needs) & (self.failed.keys() | self.skipped))

    def set_running(self, keys) -> None:
        self.running = set(keys)
        self.show()

    def finished(self, job: Job, error: BaseException | None = None) -> None:
        self.running.discard(job.key)
        if error is not None:
            self.failed[job.key] = (job, error)
        self.bar.advance(self.bars[job.level])
        self.show()

    def skip(self, job: Job) -> None:
        self.skipped.add(job.key)
        self.bar.advance(self.bars[job.level])
        self.show()

    def show(self) -> None:
        for level, task in self.bars.items():
            counts = {
                "running": sum(j.level == level and j.key in self.running for j in self.todo),
                "failed": sum(j.level == level for j, _ in self.failed.values()),
                "not run": sum(j.level == level and j.key in self.skipped for j in self.todo),
            }
            extra = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
            self.bar.update(task, description=f"{self.name} {level:<6} {extra}")

    def error(self) -> DivqatError:
        """The failures in one line: how many, which, and the first one's reason."""
        job, error = next(iter(self.failed.values()))
        cause = getattr(error, "cause", None) or error  # a Ray task's error wraps the job's own
        reason = f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}"
        names = [j.directory for j, _ in self.failed.values()]
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        not_run = f", {len(self.skipped)} not run (a job they need failed)" if self.skipped else ""
        return DivqatError(
            f"{len(self.failed)} of {len(self.todo)} jobs failed{not_run}; finished ones are kept, rerun to retry. "
            f"Failed: {listed}; first: {describe(job)}: {reason}"
        )


def open_executor(name: str, address: str | None):
    """A context that yields the executor's `run_jobs(batch, tracker)`, entered before anything is
    written (Ray starts, or joins its cluster, on entering). Imported here rather than at the top:
    the Ray executor imports ray, which only `--executor ray` needs."""
    if name not in EXECUTORS:
        raise DivqatError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    if name == "local":
        if address is not None:
            raise DivqatError("--address is for --executor ray")
        from divqat.experiments import local_executor

        return local_executor.session()
    try:
        from divqat.experiments import ray_executor
    except ImportError as e:
        if e.name is None or e.name.split(".")[0] != "ray":
            raise
        raise DivqatError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    return ray_executor.session(address)


def run_experiment(
    experiment: Experiment,
    out: Path,
    *,
    jobs: int = 1,
    data_root: Path | None = None,
    quiet: bool = False,
    executor: str = "local",
    address: str | None = None,
) -> dict:
    load_plugins(experiment.plugins)
    planned = expand(experiment)
    with open_executor(executor, address) as run_jobs:
        prepare_results_directory(out)
        write_index(out, experiment, planned)
        # Dependencies first: a job's needs come before it (levels in order); cheapest first in a level.
        todo = [j for j in planned if not is_done(out, j)]
        todo.sort(key=lambda j: (LEVELS.index(j.level), expected_cost(j)))
        batch = Batch(tuple(todo), out, data_root, jobs, worker_plugins(experiment), execute)
        start = time.perf_counter()
        with progress_bar(quiet) as bar:
            tracker = Tracker(bar, experiment.name, planned, todo)
            run_jobs(batch, tracker)
    if tracker.failed:
        raise tracker.error()
    return {"jobs": len(planned), "ran": len(todo), "seconds": time.perf_counter() - start}


# Relative cost per query of each attack (measured on LeNet-5 / Fashion-MNIST, 2 cores).
ATTACK_COST = {"knockoff": 1.0, "dfme": 0.6, "knockoff-adaptive": 1.3, "jbda": 2.5}


def expected_cost(job: Job) -> tuple:
    """Cheapest first, every seed of a setting together: a grid cut short still holds whole
    rows (all seeds) of the cheaper settings rather than one seed of everything."""
    attack = job.spec.get("attack") if job.level == "attack" else None
    budget = attack["budget"] * ATTACK_COST.get(attack["attack"], 1.0) if attack else 0
    defended = job.labels.get("defense") not in (None, "none")
    return (budget * (1.2 if defended else 1.0), job.key if job.level != "attack" else "", job.labels.get("seed", 0))


def describe(job: Job) -> str:
    shown = {k: v for k, v in job.labels.items() if v not in (None, "none", {}, 0.0)}
    if job.level == "attack":
        shown |= {k: job.spec["attack"][k] for k in ("attack", "pool", "budget", "labels")}
    return json.dumps(shown, separators=(",", ":"))
