"""An experiment expanded into jobs: FP models, quantized victims, attacks (with defenses).

One FP job per distinct FP setting and seed (victims that share it start from the same FP
model); each victim needs its FP job, each attack its victim. Jobs are keyed by a hash of their
configs (experiments/jobs.py), so the undefended attack of a defense sweep is the grid's own.
"""

import dataclasses
import functools
import json

from divqat.configs import AttackConfig, VictimConfig, hashed_spec
from divqat.experiments.config import Experiment
from divqat.experiments.jobs import Job, make_job

# What an FP model depends on; every other field is reset to its default in the FP job's config.
FP_FIELDS = ("dataset", "model", "fp_epochs", "fp_lr", "batch_size", "seed", "train_limit")


def fp_config(config: VictimConfig) -> VictimConfig:
    return VictimConfig(method="fp", **{k: getattr(config, k) for k in FP_FIELDS})


def thief_variant(config: AttackConfig) -> str:
    """The adaptive options that differ from a plain thief, in words ("plain" for none)."""
    parts = []
    if config.confidence_tau:
        parts.append(f"conf-{config.confidence_mode}{config.confidence_tau:g}")
    if config.smoothing > 1:
        parts.append(f"smooth{config.smoothing}")
    if config.in_seeds:
        parts.append(f"in{config.in_seeds}")
    if config.consistency_noise:
        parts.append(f"twice{config.consistency_noise:g}")
    if config.label_smoothing:
        parts.append(f"ls{config.label_smoothing:g}")
    return "+".join(parts) or "plain"


def attack_job(victim: Job, config: AttackConfig, defense: dict | None, name: str) -> Job:
    """An attack on `victim` (its name in the config: an FP victim's job is the shared FP model's)."""
    labels = {
        "seed": victim.labels["seed"],
        "victim": name,
        "kind": "defense" if defense else "attack",
        "variant": thief_variant(config),
        "defense": defense["name"] if defense else "none",
        "defense_param": defense["param"] if defense else None,
        "defense_value": defense["value"] if defense else 0.0,
        "defense_params": json.dumps(defense["params"], sort_keys=True) if defense else None,
    }
    spec = {"attack": hashed_spec(config), "defense": defense}
    return make_job("attack", labels, spec, (victim,), data=folder_id(config.pool))


@functools.cache  # one read of the folder per plan
def folder_id(name: str) -> str | None:
    """The fingerprint of a `folder:PATH` dataset or pool (data/folders.py); None for the rest."""
    from divqat.data.folders import fingerprint, is_folder

    return fingerprint(name) if is_folder(name) else None


def defense_points(experiment: Experiment):
    for sweep in experiment.defenses.sweeps:
        ((param, values),) = sweep.values.items()
        for value in values:
            point = {"name": sweep.name, "params": {**sweep.params, param: value}, "param": param, "value": value}
            yield point | secret_id(point)


def secret_id(point: dict) -> dict:
    """A defense keyed by a secret file is keyed in the job's hash by the secret, not its path:
    replacing the file never reuses results made with the old secret."""
    if "secret_file" not in point["params"]:
        return {}
    from divqat.defenses import create_defense

    return {"secret": create_defense(point["name"], point["params"]).fingerprint()}


def expand(experiment: Experiment) -> list[Job]:
    jobs: list[Job] = []
    points = list(defense_points(experiment)) if experiment.defenses else []
    for seed in experiment.seeds:
        fps: dict[str, Job] = {}
        victims: dict[str, Job] = {}
        for entry in experiment.victims:
            if not entry.runs_on(seed):
                continue
            for name, _, config in experiment.victim_configs(entry, seed):
                fp_spec = dataclasses.asdict(fp_config(config))
                fp = make_job(
                    "fp", {"seed": seed, "victim": "fp", "form": "fp"}, fp_spec, data=folder_id(config.dataset)
                )
                fps.setdefault(fp.key, fp)
                if config.method == "fp":
                    victims[name] = fps[fp.key]
                    continue
                labels = {"seed": seed, "victim": name, "form": entry.name}
                victims[name] = make_job("victim", labels, dataclasses.asdict(config), (fps[fp.key],))
        jobs.extend(fps.values())
        jobs.extend(j for j in victims.values() if j.level == "victim")
        for name, victim in victims.items():
            for entry in experiment.attacks:
                if (entry.victims is None or name in entry.victims) and entry.runs_on(seed):
                    jobs.extend(attack_job(victim, c, None, name) for c in experiment.attack_configs(entry, seed))
        d = experiment.defenses
        if d and d.runs_on(seed):
            for name in (n for n in d.victims if n in victims):
                for config in (c for entry in d.attacks for c in experiment.attack_configs(entry, seed)):
                    jobs.append(attack_job(victims[name], config, None, name))
                    jobs.extend(attack_job(victims[name], config, p, name) for p in points)
    unique = {job.key: job for job in jobs}  # the undefended attack can appear twice
    return list(unique.values())
