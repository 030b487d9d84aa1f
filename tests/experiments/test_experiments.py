"""Configs, the resumable runner and the report, on a grid small enough for a test."""

import json
import re
import shutil
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
    "seeds": [0],
    "victim": {"dataset": "fashion-mnist", "model": "lenet5", "fp_epochs": 2, "epochs": 1, "lr": 1.0e-3,
               "batch_size": 128, "beta": 0.0, "distill": 0.0},
    "victims": [
        {"name": "qat", "method": "qat"},
        {"name": "nt-js", "method": "divqat", "preset": "bounded", "alpha": [1.0]},
    ],
    "attack": {"attack": "knockoff", "pool": "in", "budget": 300, "epochs": 2, "surrogate": "lenet5"},
    "attacks": [{"labels": ["soft", "hard"]}],
    "defenses": {
        "victims": ["qat"],
        "attack": {"labels": "soft"},
        "sweeps": [{"name": "reverse-sigmoid", "params": {"gamma": 0.2}, "values": {"beta": [0.2]}}],
    },
}  # fmt: skip


def write(tmp_path, config) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "change,field",
    [
        (lambda c: c.update(seeds="zero"), "config.seeds[0]"),
        (lambda c: c.update(colour="red"), "config.colour"),
        (lambda c: c["victims"][1].update(alpha=[-1.0]), "victims[1].alpha"),
        (lambda c: c["victims"][1].update(alphas=[1.0]), "victims[1].alphas: unknown field (give `alpha` a list)"),
        (lambda c: c["victims"][0].update(method="magic"), "victims[0].method"),
        (lambda c: c["victims"][0].update(preset="magic"), "victims[0].preset"),
        (lambda c: c["attacks"][0].update(budget=[0]), "attacks[0].budget"),
        (lambda c: c["attacks"][0].update(attack="copycat"), "attacks[0].attack"),
        (lambda c: c["attacks"][0].update(epochs="many"), "attacks[0].epochs"),
        (lambda c: c["attacks"][0].update(seed=3), "attacks[0].seed"),
        (lambda c: c["victim"].update(lr=-1.0), "victim.lr"),
        (lambda c: c["defenses"]["sweeps"][0]["params"].update(gamma=-5.0), "defenses.sweeps[0]"),
        (lambda c: c["defenses"].update(victims=["nobody"]), "defenses.victims[0]"),
        (lambda c: c["defenses"]["sweeps"][0].update(name="blur"), "defenses.sweeps[0].name"),
        (lambda c: c.pop("victims"), "config.victims"),
        (lambda c: c["victim"].update(dataset="imagenet"), "victim.dataset"),
        (
            lambda c: c["victims"].append({"name": "qat-again", "method": "qat"}),
            "qat and qat-again are the same victim",
        ),
        (lambda c: c["attacks"][0].update(victims=["ghost"]), "attacks[0].victims[0]"),
        (lambda c: c["victims"][1].update(seeds=[7]), "victims[1].seeds"),
    ],
)
def test_invalid_config_names_the_field(tmp_path, capsys, change, field):
    config = json.loads(json.dumps(TINY))
    change(config)
    path = write(tmp_path, config)
    with pytest.raises(DivqatError, match=re.escape(field)):
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
    from divqat.experiments.config import parse_experiment

    jobs = expand(parse_experiment(TINY))
    levels = [j.level for j in jobs]
    assert levels.count("fp") == 1 and levels.count("victim") == 2
    assert levels.count("attack") == 5  # 2 victims x 2 label modes, + 1 defended (the undefended one is shared)
    assert len({j.key for j in jobs}) == len(jobs)
    only_qat = json.loads(json.dumps(TINY))
    only_qat["attacks"][0]["victims"] = ["qat"]
    jobs = expand(parse_experiment(only_qat))
    assert {j.labels["victim"] for j in jobs if j.level == "attack"} == {"qat"}
    with_fp = json.loads(json.dumps(TINY))
    with_fp["victims"].append({"name": "fp", "method": "fp"})
    with_fp["victims"][-1]["name"] = "float"  # an FP victim keeps its own name in its attacks' labels
    attacks_on_fp = [j for j in expand(parse_experiment(with_fp)) if j.labels["victim"] == "float"]
    assert attacks_on_fp and all(j.need_dirs[0].startswith("fp-") for j in attacks_on_fp if j.level == "attack")


def test_rows_limited_to_some_seeds():
    """A reduced design: the costly victim and thieves on seed 0 only, the rest on every seed."""
    from divqat.experiments.config import parse_experiment

    reduced = json.loads(json.dumps(TINY)) | {"seeds": [0, 1]}
    reduced["victims"][1]["seeds"] = [0]
    reduced["attacks"].append(dict(reduced["attacks"][0], labels="soft", smoothing=2, seeds=[1]))
    reduced["defenses"]["seeds"] = [1]
    jobs = expand(parse_experiment(reduced))
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
        run_experiment(experiment, out, data_root=tiny_root)
    finished = dict(results(out))
    assert len(finished) == 3

    resumed = []

    def counting(job, out, data_root, threads):
        resumed.append(job.key)
        return original(job, out, data_root, threads)

    monkeypatch.setattr(runner_module, "execute", counting)
    summary = run_experiment(experiment, out, data_root=tiny_root)
    assert summary == {**summary, "jobs": 8, "ran": 5}
    assert not set(resumed) & set(calls)  # nothing finished was recomputed
    after = results(out)
    assert all(after[k] == v for k, v in finished.items())  # and nothing finished was rewritten

    monkeypatch.setattr(runner_module, "execute", original)
    clean = tmp_path / "uninterrupted"
    run_experiment(experiment, clean, data_root=tiny_root)
    assert results(clean) == after

    paths = write_report(out)
    report = (out / "report.md").read_text()
    assert "Victims" in report and "nt-js-a1" in report and "reverse-sigmoid" in report and "Effective" in report
    assert (out / "report.html").is_file() and (out / "thieves.png").stat().st_size > 1000
    assert (out / "results.csv").is_file() and "(n=1)" in report and "+- 0.0" not in report
    assert all(p.exists() for p in paths)

    shutil.rmtree(out / "jobs")
    with pytest.raises(DivqatError, match="no finished jobs"):
        write_report(out)


def test_report_of_a_non_results_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a results directory" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where configs/watermark.yaml finds the secret it names
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "watermark.key").write_bytes(bytes(range(32)))
    experiment = load_experiment(path)
    assert expand(experiment)


def test_report_pairs_with_the_configured_baseline(tmp_path, tiny_root):
    """`baseline:` names the victim every "vs" column is paired with (here not called qat)."""
    config = json.loads(json.dumps(TINY))
    config["victims"][0]["name"] = "plain"
    config["baseline"] = "plain"
    config["defenses"]["victims"] = ["plain"]
    config["attack"]["budget"] = 200
    config.pop("defenses")
    out = tmp_path / "results"
    run_experiment(load_experiment(write(tmp_path, config)), out, data_root=tiny_root)
    write_report(out)
    report = (out / "report.md").read_text()
    assert "vs plain (pp, same seeds)" in report and "(vs plain)" in report
    assert "(0.0 (n=1) pp)" not in report  # the baseline is not compared with itself
    bad = json.loads(json.dumps(config))
    bad["baseline"] = "qat"
    with pytest.raises(DivqatError, match="baseline: unknown victim 'qat'"):
        load_experiment(write(tmp_path, bad))
