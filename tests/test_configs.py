"""Every knob is defined once (divqat/configs.py) and reached from YAML, the CLI and the API."""

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from divqat import api
from divqat.cli import main
from divqat.configs import PRESETS, AttackConfig, ConfigError, VictimConfig, victim_config
from divqat.experiments.config import load_experiment
from divqat.experiments.grid import expand

# A valid value other than the default for every field: a new field must be added here too.
VICTIM = dict(
    alpha=0.25, divergence="kl", non_target=False, logq_floor=0.01, hinge=0.5, warmup=0.1, beta=1.5,
    outlier_loss="shift", outliers=("noise", "shapes"), distill=1.0, dataset="mnist", model="cnn", method="qat",
    weight_bits=4, activation_bits=7, epochs=3, lr=2e-4, fp_epochs=2, fp_lr=2e-3, batch_size=64, calibration_size=512,
    seed=5, train_limit=100,
)  # fmt: skip
ATTACK = dict(
    attack="jbda", params={"seed_size": 50, "step": 0.2}, pool="photos", budget=123, labels="hard", surrogate="cnn",
    epochs=3, lr=5e-4, batch_size=32, schedule="constant", seed=5, augment=True, confidence_tau=0.5,
    confidence_mode="weight", smoothing=2, in_seeds=10, consistency_noise=0.02, label_smoothing=0.1,
)  # fmt: skip


@pytest.mark.parametrize("cls,sample", [(VictimConfig, VICTIM), (AttackConfig, ATTACK)])
def test_the_samples_cover_every_field_with_a_value_that_is_not_the_default(cls, sample):
    defaults = cls()
    assert sample.keys() == {f.name for f in dataclasses.fields(cls)}
    assert all(getattr(defaults, k) != v for k, v in sample.items())
    assert all(f.metadata.get("help") for f in dataclasses.fields(cls))  # what --help and the docs show


def cli_words(sample: dict, cls) -> list[str]:
    words = []
    for f in dataclasses.fields(cls):
        value, flag = sample[f.name], f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if isinstance(value, dict):  # repeated key=value words
            words += [w for k, v in value.items() for w in (flag, f"{k}={v}")]
        elif isinstance(value, bool):
            names = [n for n in f.metadata.get("names", ()) if "/" in n] or [f"{flag}/--no-{flag[2:]}"]
            on, off = names[0].split("/")
            words.append(on if value else off)
        else:
            words += [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
    return words


def test_every_victim_field_is_settable_from_the_cli(monkeypatch, tmp_path):
    got = {}
    monkeypatch.setattr("divqat.pipeline.train", lambda config, out, **kw: got.setdefault("config", config) and {})
    assert main(["train", "--out", str(tmp_path / "v"), *cli_words(VICTIM, VictimConfig)]) == 0
    assert got["config"] == VictimConfig(**VICTIM)


def test_every_attack_field_is_settable_from_the_cli(monkeypatch, tmp_path):
    got = {}
    monkeypatch.setattr(
        "divqat.extraction.run_attack", lambda victim, config, out, **kw: got.setdefault("c", config) and {}
    )
    assert (
        main(["attack", "--victim", str(tmp_path), "--out", str(tmp_path / "a"), *cli_words(ATTACK, AttackConfig)]) == 0
    )
    assert got["c"] == AttackConfig(**ATTACK)


def test_every_field_is_settable_from_yaml(tmp_path):
    seed = VICTIM["seed"]
    config = {
        "name": "all-fields", "seeds": [seed], "baseline": "v",
        "victims": [{"name": "v", **{k: list(v) if isinstance(v, tuple) else v
                                     for k, v in VICTIM.items() if k != "seed"}}],
        "attacks": [{k: v for k, v in ATTACK.items() if k != "seed"}],
    }  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = {j.level: j for j in expand(load_experiment(path))}
    assert VictimConfig(**jobs["victim"].spec) == VictimConfig(**VICTIM)
    assert AttackConfig(**jobs["attack"].spec["attack"]) == AttackConfig(**ATTACK)


def test_every_field_is_settable_from_the_api(monkeypatch, tiny_splits, tmp_path):
    got = {}
    monkeypatch.setattr(api.pipeline, "train", lambda config, out, **kw: got.setdefault("victim", config))
    fields = {k: v for k, v in VICTIM.items() if k not in ("dataset", "model")}  # from the data and the model
    api.train_victim("cnn", tiny_splits, tmp_path / "v", **fields)
    assert got["victim"] == VictimConfig(**{**VICTIM, "dataset": tiny_splits.dataset})
    assert api.attack(**ATTACK).config == AttackConfig(**ATTACK)
    flat = {k: v for k, v in ATTACK.items() if k != "params"} | ATTACK["params"]  # the attack's own as keywords
    assert api.attack(**flat).config == AttackConfig(**ATTACK)


def test_presets_sit_under_the_fields_given():
    paper = victim_config("paper")
    assert (paper.divergence, paper.non_target, paper.beta, paper.distill) == ("kl", False, 0.0, 0.0)
    assert victim_config("paper", alpha=1.0).alpha == 1.0
    assert VictimConfig() == victim_config("protect")  # the default is the setting that protects
    assert set(PRESETS) == {"protect", "paper", "bounded"}


@pytest.mark.parametrize(
    "cls,fields,field",
    [
        (VictimConfig, {"alpha": -1.0}, "alpha"),
        (VictimConfig, {"divergence": "wasserstein"}, "divergence"),
        (VictimConfig, {"outliers": "noise,nothing"}, "outliers"),
        (VictimConfig, {"weight_bits": 3}, "weight_bits"),
        (VictimConfig, {"dataset": "imagenet"}, "dataset"),
        (AttackConfig, {"budget": 0}, "budget"),
        (AttackConfig, {"pool": "everything"}, "pool"),
        (AttackConfig, {"surrogate": "vgg"}, "surrogate"),
    ],
)
def test_a_bad_value_names_its_field(cls, fields, field):
    with pytest.raises(ConfigError) as error:
        cls(**fields)
    assert error.value.field == field and str(error.value).startswith(f"{field}: ")


# The DivQAT objective's and the adaptive thief's knobs: before this schema, each was written out
# in up to six places (objectives, victim recipe, YAML spec, grid, CLI, pipeline); now once.
# (beta is left out: reverse sigmoid's and DCP's own parameter has the same name.)
KNOBS = {"alpha", "divergence", "non_target", "logq_floor", "hinge", "warmup", "outlier_loss", "outliers", "distill"}
KNOBS |= {"confidence_tau", "confidence_mode", "smoothing", "in_seeds", "augment", "fp_epochs", "fp_lr", "train_limit"}
KNOBS |= {"consistency_noise", "label_smoothing"}


def definitions() -> dict[str, list[str]]:
    """Where a knob is declared: a class-level field, or a parameter with a default of a function."""
    found = {}
    for path in (Path(__file__).resolve().parents[1] / "src" / "divqat").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ClassDef):
                names = [
                    s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                ]
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                defaults += node.args.kw_defaults
                names = [a.arg for a, d in zip(args, defaults, strict=True) if d is not None]
            for name in set(names) & KNOBS:
                found.setdefault(name, []).append(path.name)
    return found


def test_every_knob_is_defined_once():
    assert definitions() == {name: ["configs.py"] for name in KNOBS}
