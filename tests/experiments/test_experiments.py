"""Configs, the resumable runner and the report, on a grid small enough for a test."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from job_results import results

from divqat.cli import main
from divqat.errors import DivqatError
from divqat.experiments import load_experiment, run_experiment, write_report
from divqat.experiments import runner as runner_module
from divqat.experiments.grid import expand

TINY = {
    "name": "tiny",
    "dataset": "fashion-mnist",
    "model": "lenet5",
    "seeds": [0],
    "train": {"fp_epochs": 2, "epochs": 1, "lr": 1.0e-3, "batch_size": 128},
    "victims": [
        {"name": "qat", "method": "qat"},
        {"name": "nt-js", "method": "divqat", "divergence": "js", "non_target": True, "alphas": [1.0]},
    ],
    "attacks": [{"attack": "knockoff", "pool": "in", "budgets": [300], "labels": ["soft", "hard"], "epochs": 2}],
    "defenses": {
        "victims": ["qat"],
        "attack": {"attack": "knockoff", "pool": "in", "budgets": [300], "labels": ["soft"], "epochs": 2},
        "sweeps": [{"name": "reverse-sigmoid", "params": {"gamma": 0.2}, "values": {"beta": [0.2]}}],
    },
}


def write(tmp_path, config) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "change,field",
    [
        (lambda c: c.update(seeds="zero"), "config.seeds[0]"),
        (lambda c: c.update(colour="red"), "config.colour"),
        (lambda c: c["victims"][1].update(alphas=[-1.0]), "victims[1].alphas"),
        (lambda c: c["victims"][0].update(method="magic"), "victims[0].method"),
        (lambda c: c["attacks"][0].update(budgets=[0]), "attacks[0].budgets"),
        (lambda c: c["attacks"][0].update(attack="copycat"), "attacks[0].attack"),
        (lambda c: c["attacks"][0].update(epochs="many"), "config.attacks[0].epochs"),
        (lambda c: c["defenses"].update(victims=["nobody"]), "defenses.victims[0]"),
        (lambda c: c["defenses"]["sweeps"][0].update(name="blur"), "defenses.sweeps[0].name"),
        (lambda c: c.pop("victims"), "config.victims"),
        (lambda c: c.update(dataset="imagenet"), "dataset"),
        (lambda c: c["attacks"][0].update(victims=["ghost"]), "attacks[0].victims[0]"),
        (lambda c: c["victims"][1].update(seeds=[7]), "victims[1].seeds"),
    ],
)
def test_invalid_config_names_the_field(tmp_path, capsys, change, field):
    config = json.loads(json.dumps(TINY))
    change(config)
    path = write(tmp_path, config)
    with pytest.raises(DivqatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_experiment(path)
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and field in err and "Traceback" not in err


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(DivqatError, match="not valid YAML"):
        load_experiment(bad)
    with pytest.raises(DivqatError, match="no such config file"):
        load_experiment(tmp_path / "absent.yaml")


def test_grid_shape():
    from divqat.experiments.config import Experiment, convert

    jobs = expand(convert(Experiment, TINY, "config"))
    levels = [j.level for j in jobs]
    assert levels.count("fp") == 1 and levels.count("victim") == 2
    assert levels.count("attack") == 5  # 2 victims x 2 label modes, + 1 defended (the undefended one is shared)
    assert len({j.key for j in jobs}) == len(jobs)
    only_qat = json.loads(json.dumps(TINY))
    only_qat["attacks"][0]["victims"] = ["qat"]
    jobs = expand(convert(Experiment, only_qat, "config"))
    assert {j.labels["victim"] for j in jobs if j.level == "attack"} == {"qat"}
    with_fp = json.loads(json.dumps(TINY))
    with_fp["victims"].append({"name": "fp", "method": "fp"})
    attacks_on_fp = [j for j in expand(convert(Experiment, with_fp, "config")) if j.labels["victim"] == "fp"]
    assert attacks_on_fp and all(j.need_dirs[0].startswith("fp-") for j in attacks_on_fp if j.level == "attack")


def test_rows_limited_to_some_seeds():
    """A reduced design: the costly victim and thieves on seed 0 only, the rest on every seed."""
    from divqat.experiments.config import Experiment, convert

    reduced = json.loads(json.dumps(TINY)) | {"seeds": [0, 1]}
    reduced["victims"][1]["seeds"] = [0]
    reduced["attacks"].append(dict(reduced["attacks"][0], labels=["soft"], smoothing=2, seeds=[1]))
    reduced["defenses"]["seeds"] = [1]
    jobs = expand(convert(Experiment, reduced, "config"))
    seeds_of = lambda pick: sorted({j.labels["seed"] for j in jobs if pick(j.labels)})  # noqa: E731
    assert seeds_of(lambda job: job["victim"] == "qat") == [0, 1]
    assert seeds_of(lambda job: job["victim"].startswith("nt-js")) == [0]
    assert seeds_of(lambda job: job.get("variant") == "smooth2") == [1]
    assert seeds_of(lambda job: job.get("defense", "none") != "none") == [1]


def test_killed_runner_resumes_without_recomputing(tmp_path, tiny_root, monkeypatch):
    experiment = load_experiment(write(tmp_path, TINY))
    original = runner_module.execute
    calls = []

    def killed_after_three(job, out, data_root, threads):
        if len(calls) == 3:  # die in the middle of the 4th job, leaving a half-written directory
            (out / "jobs" / f".{job.directory}.partial").mkdir()
            raise KeyboardInterrupt
        calls.append(job.key)
        return original(job, out, data_root, threads)

    monkeypatch.setattr(runner_module, "execute", killed_after_three)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment, out, data_root=tiny_root, quiet=True)
    finished = dict(results(out))
    assert len(finished) == 3

    resumed = []

    def counting(job, out, data_root, threads):
        resumed.append(job.key)
        return original(job, out, data_root, threads)

    monkeypatch.setattr(runner_module, "execute", counting)
    summary = run_experiment(experiment, out, data_root=tiny_root, quiet=True)
    assert summary == {**summary, "jobs": 8, "ran": 5}
    assert not set(resumed) & set(calls)  # nothing finished was recomputed
    after = results(out)
    assert all(after[k] == v for k, v in finished.items())  # and nothing finished was rewritten

    monkeypatch.setattr(runner_module, "execute", original)
    clean = tmp_path / "uninterrupted"
    run_experiment(experiment, clean, data_root=tiny_root, quiet=True)
    assert results(clean) == after

    paths = write_report(out)
    report = (out / "report.md").read_text()
    assert "Victims" in report and "nt-js-a1" in report and "reverse-sigmoid" in report and "Effective" in report
    assert (out / "report.html").is_file() and (out / "alpha.png").stat().st_size > 1000
    assert all(p.exists() for p in paths)

    shutil.rmtree(out / "jobs")
    with pytest.raises(DivqatError, match="no finished jobs"):
        write_report(out)


def test_report_of_a_non_results_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a results directory" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(path):
    experiment = load_experiment(path)
    assert expand(experiment)


def row(**fields) -> dict:
    base = {"level": "attack", "kind": "attack", "victim": "qat", "seed": 0, "attack": "knockoff", "pool": "ood",
            "budget": 1000, "labels": "soft", "surrogate": "cnn", "variant": "plain", "defense": "none",
            "defense_param": None, "defense_value": 0.0, "surrogate_accuracy": 0.5, "fidelity": 0.5,
            "defended_accuracy": 0.9, "defense_l1": 0.0}  # fmt: skip
    return {**base, **fields}


def test_defense_answer_time_is_paired_with_the_same_thief():
    """The undefended baseline of a defended run is the same thief (attack, pool, labels,
    surrogate...), not whichever run of that victim, seed and budget came last."""
    from divqat.experiments.report import defense_table

    rows = [
        row(answer_seconds_per_query=1e-5),  # the defended thief's own setting
        row(attack="jbda", pool="in", labels="hard", answer_seconds_per_query=4e-5),  # same victim, seed, budget
        row(kind="defense", defense="mad", defense_param="epsilon", defense_value=0.3, answer_seconds_per_query=3e-5),
    ]
    (line,) = defense_table(rows).rows
    assert line[-1] == "3.0x"


def test_defense_rows_keep_soft_and_top1_thieves_apart():
    """Two thieves behind the same defense are two rows, never one mean over label modes."""
    from divqat.experiments.report import defense_table, pm

    defended = dict(kind="defense", defense="mad", defense_param="epsilon", defense_value=0.3)
    rows = [
        row(answer_seconds_per_query=1e-5),
        row(labels="hard", answer_seconds_per_query=1e-5),
        row(surrogate_accuracy=0.2, answer_seconds_per_query=2e-5, **defended),
        row(labels="hard", surrogate_accuracy=0.6, answer_seconds_per_query=2e-5, **defended),
    ]
    table = defense_table(rows)
    thief, accuracy = table.headers.index("thief"), table.headers.index("thief acc %")
    assert sorted((line[thief], line[accuracy]) for line in table.rows) == [
        ("knockoff ood 1000 hard cnn", pm([0.6])),
        ("knockoff ood 1000 soft cnn", pm([0.2])),
    ]


def test_report_pairs_with_the_configured_baseline(tmp_path, tiny_root):
    """`baseline:` names the victim every "vs" column is paired with (here not called qat)."""
    config = json.loads(json.dumps(TINY))
    config["victims"][0]["name"] = "plain"
    config["baseline"] = "plain"
    config["defenses"]["victims"] = ["plain"]
    config["attacks"][0]["budgets"] = [200]
    config.pop("defenses")
    out = tmp_path / "results"
    run_experiment(load_experiment(write(tmp_path, config)), out, data_root=tiny_root, quiet=True)
    write_report(out)
    report = (out / "report.md").read_text()
    assert "vs plain (pp)" in report and "0.00 +- 0.00" in report  # the baseline against itself
    assert "(vs plain)" in report and "(0.0 +- 0.0 pp)" in report
    bad = json.loads(json.dumps(config))
    bad["baseline"] = "qat"
    with pytest.raises(DivqatError, match="baseline: unknown victim 'qat'"):
        load_experiment(write(tmp_path, bad))


def test_worker_processes_print_no_warnings(tmp_path, tiny_root):
    """A new user's screen shows divqat's own output: the spawned workers of --jobs 2 keep
    torch.export's FutureWarnings to themselves, as the main process does."""
    config = json.loads(json.dumps(TINY))
    config.pop("defenses")
    config["attacks"] = []
    path = write(tmp_path, config)
    env = {**os.environ, "DIVQAT_DATA": str(tiny_root)}
    proc = subprocess.run(
        [sys.executable, "-m", "divqat.cli", "run", str(path), "--out", str(tmp_path / "o"), "--jobs", "2", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "Warning" not in proc.stdout, proc.stderr
