"""`--executor ray`: every job a Ray task, on this machine or a cluster (`--address`).

A task's arguments include the tasks of the jobs it needs, so Ray starts an attack as soon as its
own victim is done, and never starts one whose victim failed. Workers write OUT/jobs/<job> with
the same staging + rename as the local executor, so OUT must be the same directory on every node
(one machine, or a shared file system); a node that does not see it fails its jobs, saying so.
"""

import logging
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import ray

from divqat.artifacts import is_marked
from divqat.errors import DivqatError
from divqat.experiments.jobs import Batch, Execute, Job, is_done
from divqat.plugins import init_worker

# FP models and thieves' surrogates train on CUDA when a task is given a GPU; quantized victims
# train on the CPU (the x86 PT2E flow), so a GPU would sit idle under them.
GPU_LEVELS = ("fp", "attack")


@ray.remote(num_cpus=0)
class Started:
    """Which jobs have begun on a worker: tasks tell it, the driver's progress bars ask it."""

    def __init__(self):
        self.keys: set[str] = set()

    def add(self, key: str) -> None:
        self.keys.add(key)

    def get(self) -> set[str]:
        return self.keys


@ray.remote
def run_job(
    job: Job, execute: Execute, out: str, data_root: str | None, threads: int, plugins: tuple[str, ...], started, *needs
):
    """One job on a worker. `needs` (the results of the tasks it depends on) only make Ray wait."""
    init_worker(plugins)  # the user's registrations and warning filters, once per worker process
    out = Path(out)
    if not is_marked(out):
        raise DivqatError(
            f"{out} is not visible on {socket.gethostname()}: with Ray on several machines, --out must be "
            "on a file system they share, at the same path"
        )
    if is_done(out, job):  # a retried task whose first attempt finished
        return 0.0
    started.add.remote(job.key)
    # Looked up again now that the plugins are loaded: a plugin may wrap it (the tests' do).
    execute = getattr(sys.modules.get(execute.__module__), execute.__name__, execute)
    return execute(job, out, Path(data_root) if data_root else None, threads)


def connect(address: str | None) -> bool:
    """Join the cluster at `address`, or start Ray on this machine; True when this call did either."""
    if address:
        check_reachable(address)
    if ray.is_initialized():  # a caller's own runtime (tests, notebooks): use it, leave it running
        return False
    options = {"address": address} if address else {"address": "local", "include_dashboard": False}
    try:
        ray.init(**options, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"at {address}" if address else "on this machine"
        raise DivqatError(f"cannot start or reach Ray {where}: {(str(e).splitlines() or [''])[0]}") from None
    return True


def check_reachable(address: str) -> None:
    """Ray waits minutes for a cluster that is not there; a plain TCP connection says so at once."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():  # auto, or a form only Ray knows
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise DivqatError(f"cannot reach a Ray cluster at {address} ({e.strerror or e})") from None


def cpus_per_job(jobs: int) -> int:
    """A node's cores / --jobs, at least 1, on the largest node: each job gets the threads it
    would have there under the local executor, and a job fits on every node of a uniform cluster."""
    cores = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    return max(1, int(max(cores, default=1)) // jobs)


def resources(job: Job, cpus: int, cluster_has_gpus: bool) -> dict:
    return {"num_cpus": cpus, "num_gpus": 1 if cluster_has_gpus and job.level in GPU_LEVELS else 0}


@contextmanager
def session(address: str | None):
    started_here = connect(address)
    try:
        yield run_jobs
    finally:
        if started_here:
            ray.shutdown()


def run_jobs(batch: Batch, tracker) -> None:
    started = Started.remote()
    try:
        wait_for(submit(batch, started), batch, tracker, started)
    finally:
        ray.kill(started)


def submit(batch: Batch, started) -> dict:
    """A task per job, dependencies first (batch.todo is in that order); returns {ref: job}."""
    threads = cpus_per_job(batch.jobs)
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    out = str(batch.out.resolve())
    data_root = str(batch.data_root.resolve()) if batch.data_root else None
    refs: dict[str, ray.ObjectRef] = {}
    for job in batch.todo:
        needs = [refs[key] for key in job.needs if key in refs]  # the others finished in an earlier run
        task = run_job.options(**resources(job, threads, gpus), name=job.directory)
        refs[job.key] = task.remote(job, batch.execute, out, data_root, threads, batch.plugins, started, *needs)
    return {ref: job for job, ref in zip(batch.todo, refs.values(), strict=True)}


def wait_for(pending: dict, batch: Batch, tracker, started) -> None:
    """Collect results as they come, dependencies before the jobs that need them; on an interrupt
    (Ctrl-C), cancel what is left and wait until it has stopped, so a rerun never races it."""
    order = list(pending)
    try:
        while order:
            ready, order = ray.wait(order, num_returns=len(order), timeout=1.0)  # both keep submission order
            for ref in ready:
                finish(ref, pending[ref], batch, tracker)
            tracker.set_running(running(started, order, pending))
    except BaseException:
        for ref in order:
            ray.cancel(ref, force=True)
        ray.wait(order, num_returns=len(order), timeout=30)
        raise


def finish(ref, job: Job, batch: Batch, tracker) -> None:
    try:
        ray.get(ref)
    except Exception as e:  # noqa: BLE001  (reported by the runner, with the job)
        if tracker.blocked(job):  # Ray did not run it: a job it needs failed
            tracker.skip(job)
        else:
            tracker.finished(job, e)
        return
    if is_done(batch.out, job):
        tracker.finished(job)
    else:  # the worker wrote to a directory of the same name on its own disk
        tracker.finished(job, DivqatError(f"{job.directory} finished on a node that does not share --out"))


def running(started, order: list, pending: dict) -> set[str]:
    begun = ray.get(started.get.remote())
    return {pending[ref].key for ref in order if pending[ref].key in begun}
