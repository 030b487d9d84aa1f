"""The report compares like with like, on a results directory written by hand (no training)."""

import csv
import dataclasses
import json

from divqat.configs import AttackConfig, VictimConfig
from divqat.experiments.report import write_report
from divqat.files import mark


def fake_results(tmp_path, attacks):
    """Victims qat and div on seeds 0-2; `attacks`: (victim, seed, surrogate accuracy, AttackConfig fields, defense)."""
    out = tmp_path / "results"
    (out / "jobs").mkdir(parents=True)
    mark(out, "results")
    index = []
    for name, accuracy in (("qat", 0.88), ("div", 0.87)):
        for seed in (0, 1, 2):
            spec = dataclasses.asdict(VictimConfig(method="qat" if name == "qat" else "divqat", seed=seed))
            directory = f"victim-{name}{seed}"
            (out / "jobs" / directory).mkdir()
            metrics = {"int8_accuracy": accuracy + seed / 1000, "deployed_accuracy": accuracy, "kl_fp_int8": 0.01}
            (out / "jobs" / directory / "metrics.json").write_text(json.dumps(metrics))
            labels = {"seed": seed, "victim": name, "form": name}
            index.append({"level": "victim", "directory": directory, "labels": labels, "spec": spec, "needs": []})
    for i, (victim, seed, accuracy, fields, defense) in enumerate(attacks):
        config = dataclasses.asdict(AttackConfig(seed=seed, **fields))
        directory = f"attack-{i}"
        (out / "jobs" / directory).mkdir()
        result = {**config, "victim": f"runs/x/jobs/victim-{victim}{seed}", "surrogate_accuracy": accuracy,
                   "fidelity": accuracy, "defended_accuracy": 0.86,
                  "defense_l1": 0.1, "answer_seconds_per_query": 1e-5, "defenses": []}  # fmt: skip
        (out / "jobs" / directory / "result.json").write_text(json.dumps(result))
        labels = {"seed": seed, "victim": victim, "kind": "defense" if defense else "attack", "variant": "plain",
                  "defense": defense["name"] if defense else "none", "defense_param": defense and defense["param"],
                  "defense_value": defense["value"] if defense else 0.0}  # fmt: skip
        spec = {"attack": config, "defense": defense}
        index.append({"level": "attack", "directory": directory, "labels": labels, "spec": spec,
                      "needs": [f"victim-{victim}{seed}"]})  # fmt: skip
    (out / "index.json").write_text(json.dumps(index))
    (out / "experiment.json").write_text(json.dumps({"name": "fake", "baseline": "qat"}))
    return out


def section(md: str, title: str) -> str:
    return md.split(f"### {title}")[1].split("###")[0]


def test_thieves_that_differ_in_any_setting_are_never_averaged_as_seeds(tmp_path):
    """Two thieves differing only in epochs: two rows, each its own mean (the old thief key had
    no epochs, learning rate, batch size or augmentation, and averaged them as if they were seeds)."""
    attacks = [(v, s, acc, {"epochs": e}, None) for v in ("qat", "div") for s in (0, 1, 2)
               for e, acc in ((5, 0.50), (20, 0.70))]  # fmt: skip
    md = (write_report(fake_results(tmp_path, attacks))[0]).read_text()
    every = section(md, "Every thief")
    assert "epochs=5" in every and "epochs=20" in every
    assert "50.0 +- 0.0" in every and "70.0 +- 0.0" in every and "60.0" not in every


def test_the_strongest_thief_is_taken_over_thieves_run_against_both_victims(tmp_path):
    """QAT faces a strong thief that div never met: div's delta must not count it (it did:
    QAT got the best of 5 thieves, paper-kl of 2, biasing its "vs QAT" downward)."""
    attacks = [("qat", s, 0.60, {}, None) for s in (0, 1, 2)] + [("div", s, 0.55, {}, None) for s in (0, 1, 2)]
    attacks += [("qat", s, 0.80, {"surrogate": "cnn"}, None) for s in (0, 1, 2)]
    md = write_report(fake_results(tmp_path, attacks))[0].read_text()
    row = next(line for line in section(md, "Strongest thief").splitlines() if line.startswith("| ood"))
    assert "80.0 +- 0.0 [2]" in row  # the baseline's own best, over its 2 thieves
    assert "(-5.0 +- 0.0 pp) [1]" in row  # div vs QAT on the 1 thief both faced, not -25
    assert "60.0 +- 0.0" not in row  # ... and div's own column is its best, 55


def test_deltas_use_the_same_seeds_and_one_seed_shows_n_1(tmp_path):
    attacks = [("qat", s, 0.60 + s / 100, {}, None) for s in (0, 1, 2)] + [("div", 0, 0.50, {}, None)]
    md = write_report(fake_results(tmp_path, attacks))[0].read_text()
    row = next(line for line in section(md, "Strongest thief").splitlines() if line.startswith("| ood"))
    assert "50.0 (-10.0 pp, n=1)" in row  # paired with QAT's seed 0 only (60), not its mean (61)
    assert "+- 0.0 (n" not in md and "+- 0.00 (n" not in md


def test_the_defense_table_pairs_none_with_the_seeds_the_defense_ran_on(tmp_path):
    defense = {"name": "reverse-sigmoid", "params": {"beta": 0.2}, "param": "beta", "value": 0.2}
    attacks = [("qat", s, 0.60 + s / 10, {}, None) for s in (0, 1, 2)] + [("qat", 0, 0.40, {}, defense)]
    md = write_report(fake_results(tmp_path, attacks))[0].read_text()
    row = next(line for line in section(md, "Post-hoc defenses").splitlines() if "reverse-sigmoid" in line)
    assert "| 40.0 (n=1) | 60.0 (n=1) |" in row  # none on seed 0 alone, not the 3-seed mean 70


def test_every_job_is_one_row_of_a_tidy_table(tmp_path):
    attacks = [(v, s, 0.5, {}, None) for v in ("qat", "div") for s in (0, 1, 2)]
    paths = write_report(fake_results(tmp_path, attacks))
    rows = list(csv.DictReader(paths[2].open()))
    assert paths[2].name == "results.csv" and len(rows) == 12
    columns = rows[0].keys()
    assert {f"victim.{f.name}" for f in dataclasses.fields(VictimConfig)} <= columns
    assert {f"attack.{f.name}" for f in dataclasses.fields(AttackConfig)} <= columns
    assert {"surrogate_accuracy", "int8_accuracy", "level", "seed", "victim"} <= columns
    qat = next(r for r in rows if r["level"] == "victim" and r["victim"] == "qat")
    assert qat["victim.beta"] == "" and qat["victim.method"] == "qat"  # no objective fields for QAT
