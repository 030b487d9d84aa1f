"""`divqat run`: execute an experiment's jobs, cached by hash, resumable, optionally in parallel.

A job's directory appears only when the job is complete (runs are staged and renamed), so a
runner killed at any point restarts with every finished job intact and recomputes none of them.
"""

import json
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from divqat.artifacts import METRICS, write_json
from divqat.errors import DivqatError
from divqat.experiments.config import Experiment
from divqat.experiments.grid import LEVELS, Job, expand
from divqat.ui import progress_bar

RESULT = "result.json"
INDEX = "index.json"


def result_file(job: Job) -> str:
    return RESULT if job.level == "attack" else METRICS


def is_done(out: Path, job: Job) -> bool:
    return (out / "jobs" / job.directory / result_file(job)).is_file()


def execute(job: Job, out: Path, data_root: Path | None, threads: int) -> float:
    """Run one job in this process; returns its wall time."""
    from divqat import pipeline
    from divqat.attacks import AttackConfig
    from divqat.defenses import create_defense
    from divqat.extraction import run_attack
    from divqat.train.victim import VictimConfig

    torch.set_num_threads(threads)
    start = time.perf_counter()
    target = out / "jobs" / job.directory
    needs = [out / "jobs" / d for d in job.need_dirs]
    if job.level in ("fp", "victim"):
        fp_from = needs[0] if needs else None
        pipeline.train(
            VictimConfig(**job.spec), target, data_root=data_root, fp_from=fp_from, overwrite=True, quiet=True
        )
    else:
        defense = job.spec["defense"]
        defenses = (create_defense(defense["name"], defense["params"], seed=config_seed(job)),) if defense else ()
        config = AttackConfig(**job.spec["attack"])
        run_attack(needs[0], config, target, data_root=data_root, defenses=defenses, overwrite=True)
    return time.perf_counter() - start


def config_seed(job: Job) -> int:
    return job.spec["attack"]["seed"]


def write_index(out: Path, experiment: Experiment, jobs: list[Job]) -> None:
    import dataclasses

    index = [{"level": j.level, "directory": j.directory, "labels": j.labels} for j in jobs]
    write_json(out / "experiment.json", dataclasses.asdict(experiment))
    write_json(out / INDEX, index)


def run_experiment(
    experiment: Experiment, out: Path, *, jobs: int = 1, data_root: Path | None = None, quiet: bool = False
) -> dict:
    planned = expand(experiment)
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    write_index(out, experiment, planned)
    todo = [j for j in planned if not is_done(out, j)]
    failed: dict[str, tuple[Job, BaseException]] = {}
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    start = time.perf_counter()
    with progress_bar(quiet) as bar:
        grid = bar.add_task(f"{experiment.name}: grid", total=len(planned), completed=len(planned) - len(todo))
        current = bar.add_task("", total=None)
        for level in LEVELS:
            # A job whose dependency failed cannot run; the others go on.
            batch = sorted(
                (j for j in todo if j.level == level and not set(j.needs) & failed.keys()), key=expected_cost
            )
            if jobs <= 1:
                for job in batch:
                    bar.update(current, description=f"{level} {describe(job)}")
                    try:
                        execute(job, out, data_root, threads)
                    except Exception as e:  # noqa: BLE001  (reported below, with the job)
                        failed[job.key] = (job, e)
                    bar.advance(grid)
            else:
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(jobs, mp_context=context) as pool:
                    pending = {pool.submit(execute, job, out, data_root, threads): job for job in batch}
                    while pending:
                        bar.update(current, description=f"{level}: {len(pending)} left, {jobs} at a time")
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            job = pending.pop(future)
                            if future.exception() is not None:
                                failed[job.key] = (job, future.exception())
                            bar.advance(grid)
        bar.update(current, description="done", total=1, completed=1)
    if failed:
        job, error = next(iter(failed.values()))
        reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        raise DivqatError(
            f"{len(failed)} of {len(todo)} jobs failed (finished ones are kept; rerun to retry); "
            f"first: {job.directory} {describe(job)}: {reason}"
        )
    return {"jobs": len(planned), "ran": len(todo), "seconds": time.perf_counter() - start}


# Relative cost per query of each attack (measured on LeNet-5 / Fashion-MNIST, 2 cores).
ATTACK_COST = {"knockoff": 1.0, "dfme": 0.6, "knockoff-adaptive": 1.3, "jbda": 2.5}


def expected_cost(job: Job) -> tuple:
    """Cheapest first, every seed of a setting together: a grid cut short still holds whole
    rows (all seeds) of the cheaper settings rather than one seed of everything."""
    labels = job.labels
    budget = labels.get("budget", 0) * ATTACK_COST.get(labels.get("attack"), 1.0)
    defended = labels.get("defense") not in (None, "none")
    return (budget * (1.2 if defended else 1.0), job.key if job.level != "attack" else "", labels.get("seed", 0))


def describe(job: Job) -> str:
    return json.dumps({k: v for k, v in job.labels.items() if v not in (None, "none")}, separators=(",", ":"))
