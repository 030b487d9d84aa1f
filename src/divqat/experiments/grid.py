"""An experiment expanded into jobs: FP victims, quantized victims, attacks (with defenses).

Each job's directory is named by a hash of everything that determines its result, including
the jobs it depends on, so a finished job is found again by any config that needs it.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from divqat.attacks import AttackConfig
from divqat.experiments.config import AttackSpec, Experiment, VictimSpec
from divqat.train.victim import VictimConfig

LEVELS = ("fp", "victim", "attack")  # a job only depends on jobs of earlier levels


@dataclass(frozen=True)
class Job:
    level: str
    key: str
    labels: dict  # what the report groups by: seed, victim, alpha, attack, budget, labels, defense...
    spec: dict  # the VictimConfig or AttackConfig (and defense) as plain data
    needs: tuple[str, ...] = ()  # keys of the jobs this one depends on (part of its hash)
    need_dirs: tuple[str, ...] = ()  # and their directories, whatever their level

    @property
    def directory(self) -> str:
        return f"{self.level}-{self.key}"


def make_job(level: str, labels: dict, spec: dict, needs: tuple[Job, ...] = ()) -> Job:
    keys = tuple(j.key for j in needs)
    blob = json.dumps({"level": level, "spec": spec, "needs": keys}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return Job(level, key, labels, spec, keys, tuple(j.directory for j in needs))


def settings(spec: VictimSpec) -> list[tuple[float, float]]:
    """(alpha, beta) of each victim a spec makes: every alpha with every beta (DivQAT only)."""
    if spec.method != "divqat":
        return [(0.0, 0.0)]
    return [(alpha, beta) for alpha in spec.alphas for beta in spec.betas]


def victim_label(spec: VictimSpec, alpha: float, beta: float = 0.0) -> str:
    if spec.method != "divqat":
        return spec.name
    return f"{spec.name}-a{alpha:g}" + (f"-b{beta:g}" if spec.betas != (0.0,) else "")


def victim_names(experiment: Experiment) -> list[str]:
    return [victim_label(v, a, b) for v in experiment.victims for a, b in settings(v)]


def victim_config(experiment: Experiment, spec: VictimSpec, alpha: float, seed: int, beta: float = 0.0) -> VictimConfig:
    t = experiment.train
    return VictimConfig(
        dataset=experiment.dataset, model=experiment.model, method=spec.method, alpha=alpha,
        divergence=spec.divergence, non_target=spec.non_target, logq_floor=spec.logq_floor, hinge=spec.hinge,
        warmup=spec.warmup, beta=beta, outlier_loss=spec.outlier_loss, outliers=spec.outliers, distill=spec.distill,
        weight_bits=spec.weight_bits, epochs=t.epochs, lr=t.lr, fp_epochs=t.fp_epochs,
        fp_lr=t.fp_lr, batch_size=t.batch_size, seed=seed, train_limit=t.train_limit,
    )  # fmt: skip


ADAPTIVE = ("augment", "confidence_tau", "confidence_mode", "smoothing", "in_seeds")


def attack_configs(experiment: Experiment, spec: AttackSpec, seed: int):
    for budget in spec.budgets:
        for labels in spec.labels:
            surrogate = spec.surrogate or experiment.model
            options = {k: getattr(spec, k) for k in ADAPTIVE}
            yield AttackConfig(spec.attack, spec.pool, budget, labels, surrogate, spec.epochs, seed=seed, **options)


def thief_variant(config: AttackConfig) -> str:
    """The adaptive options that differ from a plain thief, in words ("plain" for none)."""
    parts = []
    if config.confidence_tau:
        parts.append(f"conf-{config.confidence_mode}{config.confidence_tau:g}")
    if config.smoothing > 1:
        parts.append(f"smooth{config.smoothing}")
    if config.in_seeds:
        parts.append(f"in{config.in_seeds}")
    return "+".join(parts) or "plain"


def attack_job(victim: Job, config: AttackConfig, defense: dict | None, seed: int) -> Job:
    labels = {
        **victim.labels,
        "kind": "defense" if defense else "attack",
        "attack": config.attack,
        "pool": config.pool,
        "budget": config.budget,
        "labels": config.labels,
        "surrogate": config.surrogate,
        "augment": config.augment,
        "variant": thief_variant(config),
        "defense": defense["name"] if defense else "none",
        "defense_param": defense["param"] if defense else None,
        "defense_value": defense["value"] if defense else 0.0,
    }
    spec = {"attack": dataclasses.asdict(config), "defense": defense}
    return make_job("attack", labels, spec, (victim,))


def runs_on(spec, seed: int) -> bool:
    return spec.seeds is None or seed in spec.seeds


def expand(experiment: Experiment) -> list[Job]:
    jobs: list[Job] = []
    for seed in experiment.seeds:
        first = experiment.victims[0]
        fp_config = dataclasses.replace(victim_config(experiment, first, 0.0, seed), method="fp")
        fp = make_job("fp", {"seed": seed, "victim": "fp", "method": "fp", "alpha": 0.0}, dataclasses.asdict(fp_config))
        jobs.append(fp)
        victims: dict[str, Job] = {}
        for spec in experiment.victims:
            if not runs_on(spec, seed):
                continue
            for alpha, beta in settings(spec):
                if spec.method == "fp":
                    victims[spec.name] = fp
                    continue
                config = victim_config(experiment, spec, alpha, seed, beta)
                name = victim_label(spec, alpha, beta)
                labels = {"seed": seed, "victim": name, "form": spec.name, "method": spec.method, "alpha": alpha,
                          "beta": beta, "outlier_loss": spec.outlier_loss if beta else None}  # fmt: skip
                victims[name] = make_job("victim", labels, dataclasses.asdict(config), (fp,))
                jobs.append(victims[name])
        for name, victim in victims.items():
            for spec in experiment.attacks:
                if (spec.victims is None or name in spec.victims) and runs_on(spec, seed):
                    jobs.extend(attack_job(victim, c, None, seed) for c in attack_configs(experiment, spec, seed))
        if experiment.defenses and runs_on(experiment.defenses, seed):
            d = experiment.defenses
            for name in (n for n in d.victims if n in victims):
                for config in attack_configs(experiment, d.attack, seed):
                    jobs.append(attack_job(victims[name], config, None, seed))
                    for sweep in d.sweeps:
                        (param, values), = sweep.values.items()  # fmt: skip
                        for value in values:
                            defense = {
                                "name": sweep.name,
                                "params": {**sweep.params, param: value},
                                "param": param,
                                "value": value,
                            }
                            jobs.append(attack_job(victims[name], config, defense, seed))
    unique = {job.key: job for job in jobs}  # the undefended attack can appear twice
    return list(unique.values())
