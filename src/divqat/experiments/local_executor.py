"""`--executor local` (the default): this machine runs each level's jobs in turn, in this process
(`--jobs 1`) or in a pool of `--jobs` spawned processes, each with its share of the cores. The
pool serves every level, so a worker imports torch once per run, not once per level."""

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from divqat.experiments.jobs import LEVELS, Batch
from divqat.plugins import init_worker


@contextmanager
def session():
    yield run_jobs


def run_jobs(batch: Batch, tracker) -> None:
    """`tracker`: the runner's Tracker (blocked, skip, set_running, finished)."""
    threads = max(1, (os.cpu_count() or 1) // batch.jobs)
    pool = None
    try:
        for level in LEVELS:
            of_level = [j for j in batch.todo if j.level == level]
            # A job whose dependency failed (or was not run) cannot run; the others go on.
            for job in (j for j in of_level if tracker.blocked(j)):
                tracker.skip(job)
            ready = [j for j in of_level if j.key not in tracker.skipped]
            if batch.jobs <= 1:
                run_here(ready, batch, tracker, threads)
            elif ready:
                pool = pool or spawn_pool(batch)
                if not run_in_pool(pool, ready, batch, tracker, threads):
                    pool.shutdown()  # a worker died (killed, out of memory): the next level gets a new pool
                    pool = None
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def run_here(ready: list, batch: Batch, tracker, threads: int) -> None:
    for job in ready:
        tracker.set_running([job.key])
        try:
            batch.execute(job, batch.out, batch.data_root, threads)
        except Exception as e:  # noqa: BLE001  (reported by the runner, with the job)
            tracker.finished(job, e)
        else:
            tracker.finished(job)


def run_in_pool(pool: ProcessPoolExecutor, ready: list, batch: Batch, tracker, threads: int) -> bool:
    """Runs one level's jobs; False if a worker died, which breaks the pool."""
    pending = {pool.submit(batch.execute, job, batch.out, batch.data_root, threads): job for job in ready}
    intact = True
    while pending:
        # The pool takes jobs in submission order: the first --jobs pending ones are running.
        tracker.set_running([j.key for j in list(pending.values())[: batch.jobs]])
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            error = future.exception()
            intact &= not isinstance(error, BrokenProcessPool)
            tracker.finished(pending.pop(future), error)
    return intact


def spawn_pool(batch: Batch) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")  # fork would copy this process's threads and torch state
    return ProcessPoolExecutor(batch.jobs, mp_context=context, initializer=init_worker, initargs=(batch.plugins,))
