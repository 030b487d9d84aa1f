"""`--executor ray` on a local Ray runtime (2 CPUs): the local executor's results, metric for
metric; the same cache (a rerun or a resumed run recomputes nothing); a killed worker retried; a
user's registrations on the workers; failures reported like the local executor's."""

import importlib.util
import json
import logging
import os
import shutil
import sys

import pytest
import yaml
from job_results import results

from divqat.cli import main
from divqat.experiments import load_experiment, run_experiment
from divqat.experiments import runner as runner_module
from divqat.plugins import LOADED, load_plugins

TINY = {
    "name": "tiny-ray",
    "seeds": [0],
    "victim": {
        "dataset": "fashion-mnist",
        "model": "lenet5",
        "fp_epochs": 1,
        "epochs": 1,
        "lr": 1.0e-3,
        "batch_size": 128,
        "train_limit": 600,
        "beta": 0.0,
        "distill": 0.0,
    },
    "victims": [
        {"name": "qat", "method": "qat"},
        {"name": "nt-js", "method": "divqat", "preset": "bounded", "alpha": [1.0]},
    ],
    "attack": {"attack": "knockoff", "pool": "in", "budget": 300, "labels": "soft", "epochs": 1, "surrogate": "lenet5"},
    "attacks": [{}],
    "defenses": {
        "victims": ["qat"],
        "attack": {},
        "sweeps": [{"name": "test-sharpen", "values": {"power": [2.0]}}],
    },
}  # 6 jobs: FP -> 2 victims -> 2 attacks and 1 defended attack

# A user's plugin: a defense registered in Python, which the defended attack needs on its worker.
# On Ray workers only (not in this process, not in a local pool), it also logs every job a worker
# starts, kills the worker in its very first job (Ray retries the task), holds attacks while a
# hold-attacks file exists and fails the jobs named by a fail-<job> file.
PLUGIN = """
import os, sys, time
from dataclasses import dataclass
from pathlib import Path

from divqat.defenses.registry import Defense, register_defense

CONTROL = Path({control!r})


@register_defense("test-sharpen")
@dataclass
class Sharpen(Defense):
    power: float = 2.0

    def perturb(self, probs, images):
        sharp = probs**self.power
        return sharp / sharp.sum(-1, keepdim=True)


if os.getpid() != {driver} and "ray" in sys.modules and sys.modules["ray"].is_initialized():
    from divqat.experiments import runner

    execute = runner.execute

    def logged(job, out, data_root, threads):
        log = CONTROL / "started.log"
        first = not log.exists()
        with log.open("a") as f:
            f.write(job.directory + "\\n")
        if first:  # half-way through its first job, the worker dies
            (out / "jobs" / f".{{job.directory}}.partial").mkdir()
            os._exit(1)
        while job.level == "attack" and (CONTROL / "hold-attacks").exists():
            time.sleep(0.1)
        if (CONTROL / f"fail-{{job.directory}}").exists():
            raise RuntimeError("failed on purpose")
        return execute(job, out, data_root, threads)

    runner.execute = logged
"""


def finished_jobs(out) -> dict[str, int]:
    """Each finished job's directory and when its result file was written."""
    found = {}
    for d in (out / "jobs").iterdir():
        result = d / ("result.json" if d.name.startswith("attack-") else "metrics.json")
        if result.is_file():
            found[d.name] = result.stat().st_mtime_ns
    return found


def started(control) -> list[str]:
    log = control / "started.log"
    return log.read_text().split() if log.exists() else []


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The experiment (with its plugin loaded here, as `--plugin` would) and the plugin's control folder."""
    control = tmp_path_factory.mktemp("control")
    plugin = control / "sharpen_plugin.py"
    plugin.write_text(PLUGIN.format(control=str(control), driver=os.getpid()))
    loaded = list(LOADED)
    load_plugins([str(plugin)])
    config = control / "tiny-ray.yaml"
    config.write_text(yaml.safe_dump({**TINY, "plugins": [str(plugin)]}))
    yield load_experiment(config), config, control
    LOADED[:] = loaded  # later tests' workers need not import it (its defense stays registered)


@pytest.fixture(scope="module")
def reference(grid, tiny_root, tmp_path_factory):
    """The local executor's results, with the threads each Ray task gets (floats depend on them)."""
    out = tmp_path_factory.mktemp("local") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "cpu_count", lambda: 1)  # one job at a time, one thread: as a 2-CPU Ray with --jobs 2
        run_experiment(grid[0], out, jobs=1, data_root=tiny_root)
    return results(out)


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_run(grid, tiny_root, ray_runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "out"
    summary = run_experiment(grid[0], out, jobs=2, data_root=tiny_root, executor="ray")
    return out, summary


def test_same_results_as_the_local_executor(ray_runtime, grid, reference, ray_run):
    out, summary = ray_run
    assert summary == {**summary, "jobs": 6, "ran": 6}
    assert len(reference) == 6 and results(out) == reference  # every metric of every job
    log = started(grid[2])
    fp = next(d for d in reference if d.startswith("fp-"))
    assert log[0] == fp and log.count(fp) == 2  # its worker died; Ray ran it again, on a new one
    assert sorted(set(log)) == sorted(reference)  # all 6 ran on workers, the defended one with the plugin's defense
    assert not list((out / "jobs").glob(".*"))  # the dead worker's half-written directory was replaced


def test_a_second_run_recomputes_nothing(ray_runtime, grid, tiny_root, ray_run):
    out, _ = ray_run
    before, log = finished_jobs(out), started(grid[2])
    summary = run_experiment(grid[0], out, jobs=2, data_root=tiny_root, executor="ray")
    assert summary["ran"] == 0 and finished_jobs(out) == before and started(grid[2]) == log


def test_an_interrupted_run_resumes_without_recomputing(
    ray_runtime, grid, tiny_root, reference, ray_run, tmp_path, monkeypatch
):
    experiment, _, control = grid
    out = tmp_path / "interrupted"
    shutil.copytree(ray_run[0], out)  # FP and victims finished (the runs before ran them)...
    for attack in (d for d in reference if d.startswith("attack-")):
        shutil.rmtree(out / "jobs" / attack)
    before = finished_jobs(out)
    assert sorted(before) == sorted(d for d in reference if not d.startswith("attack-"))

    def interrupt_while_running(self, keys):  # ...and Ctrl-C on the driver once attacks are running
        if keys:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner_module.Tracker, "set_running", interrupt_while_running)
    (control / "hold-attacks").touch()  # so that they are still running when it comes
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment, out, jobs=2, data_root=tiny_root, executor="ray")
    (control / "hold-attacks").unlink()
    assert finished_jobs(out) == before
    monkeypatch.undo()

    already = len(started(control))
    summary = run_experiment(experiment, out, jobs=2, data_root=tiny_root, executor="ray")
    assert summary["ran"] == 6 - len(before) == 3
    resumed = started(control)[already:]
    attacks = sorted(d for d in reference if d.startswith("attack-"))
    assert sorted(set(resumed)) == attacks  # nothing finished ran again...
    assert all(finished_jobs(out)[d] == t for d, t in before.items())  # ...or was rewritten
    assert results(out) == reference and not list((out / "jobs").glob(".*"))


def test_a_failed_job_stops_only_the_jobs_that_need_it(ray_runtime, grid, tiny_root, ray_run, tmp_path, capsys):
    _, config, control = grid
    out = tmp_path / "failing"
    shutil.copytree(ray_run[0], out)
    index = json.loads((out / "index.json").read_text())
    victim = next(j["directory"] for j in index if j["labels"]["victim"] == "nt-js-a1" and j["level"] == "victim")
    attacks = [j["directory"] for j in index if j["level"] == "attack" and j["labels"]["victim"] == "nt-js-a1"]
    defended = next(j["directory"] for j in index if j["labels"].get("defense") == "test-sharpen")
    for name in (victim, *attacks, defended):
        shutil.rmtree(out / "jobs" / name)
    (control / f"fail-{victim}").touch()
    args = ["run", str(config), "--out", str(out), "--data-root", str(tiny_root), "--executor", "ray"]
    try:
        assert main([*args, "--jobs", "2", "--quiet", "--no-report"]) == 2
    finally:
        (control / f"fail-{victim}").unlink()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "1 of 3 jobs failed, 1 not run" in err and victim in err and "RuntimeError: failed on purpose" in err
    assert (out / "jobs" / defended / "result.json").is_file()  # the job that did not need it ran
    assert not (out / "jobs" / victim).exists() and not (out / "jobs" / attacks[0]).exists()


def one_line_error(capsys, *args) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_executor_options_are_checked_before_anything_is_written(tmp_path, capsys, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "defenses": None}))
    out = tmp_path / "never"
    run = ["run", str(config), "--out", str(out)]
    assert "unknown executor 'dask'; choose from local, ray" in one_line_error(capsys, *run, "--executor", "dask")
    assert "--address is for --executor ray" in one_line_error(capsys, *run, "--address", "auto")
    if importlib.util.find_spec("ray"):  # at once, rather than after Ray's minutes of retries
        err = one_line_error(capsys, *run, "--executor", "ray", "--address", "127.0.0.1:1")
        assert "cannot reach a Ray cluster at 127.0.0.1:1" in err
    # Where ray is missing (simulated: an import of it fails), the error says how to install it.
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "divqat.experiments.ray_executor", raising=False)
    monkeypatch.delattr("divqat.experiments.ray_executor", raising=False)
    assert "pip install -e '.[ray]'" in one_line_error(capsys, *run, "--executor", "ray")
    assert not out.exists()


def test_resources_cpus_per_node_and_a_gpu_where_training_uses_cuda(monkeypatch):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    from divqat.experiments import ray_executor
    from divqat.experiments.config import parse_experiment
    from divqat.experiments.grid import expand

    nodes = [
        {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
        {"Alive": True, "Resources": {}},  # a head node started with --num-cpus 0
        {"Alive": False, "Resources": {"CPU": 64.0}},
    ]
    monkeypatch.setattr(ray_executor.ray, "nodes", lambda: nodes)
    assert [ray_executor.cpus_per_job(n) for n in (1, 4, 32)] == [16, 4, 1]
    jobs = {j.level: j for j in expand(parse_experiment({**TINY, "defenses": None}))}
    with_gpus = {level: ray_executor.resources(job, 4, True) for level, job in jobs.items()}
    assert with_gpus == {
        "fp": {"num_cpus": 4, "num_gpus": 1},
        "victim": {"num_cpus": 4, "num_gpus": 0},  # QAT trains on the CPU
        "attack": {"num_cpus": 4, "num_gpus": 1},
    }
    assert all(ray_executor.resources(job, 4, False)["num_gpus"] == 0 for job in jobs.values())
