"""`--executor local` (the default): this machine runs each level's jobs in turn, in this process
(`--jobs 1`) or in a pool of `--jobs` spawned processes, each with its share of the cores."""

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager

from divqat.experiments.jobs import LEVELS, Batch
from divqat.plugins import init_worker


@contextmanager
def session():
    yield run_jobs


def run_jobs(batch: Batch, tracker) -> None:
    """`tracker`: the runner's Tracker (blocked, skip, set_running, finished)."""
    threads = max(1, (os.cpu_count() or 1) // batch.jobs)
    for level in LEVELS:
        of_level = [j for j in batch.todo if j.level == level]
        # A job whose dependency failed (or was not run) cannot run; the others go on.
        for job in (j for j in of_level if tracker.blocked(j)):
            tracker.skip(job)
        ready = [j for j in of_level if j.key not in tracker.skipped]
        if batch.jobs <= 1:
            for job in ready:
                tracker.set_running([job.key])
                try:
                    batch.execute(job, batch.out, batch.data_root, threads)
                except Exception as e:  # noqa: BLE001  (reported by the runner, with the job)
                    tracker.finished(job, e)
                else:
                    tracker.finished(job)
            continue
        context = multiprocessing.get_context("spawn")  # fork would copy this process's threads and torch state
        workers = dict(mp_context=context, initializer=init_worker, initargs=(batch.plugins,))
        with ProcessPoolExecutor(batch.jobs, **workers) as pool:
            pending = {pool.submit(batch.execute, job, batch.out, batch.data_root, threads): job for job in ready}
            while pending:
                # The pool takes jobs in submission order: the first --jobs pending ones are running.
                tracker.set_running([j.key for j in list(pending.values())[: batch.jobs]])
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    tracker.finished(pending.pop(future), future.exception())
