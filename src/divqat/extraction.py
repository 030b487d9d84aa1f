"""`divqat attack`: steal a victim through its black-box interface and measure the theft."""

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from divqat import artifacts, metrics
from divqat.attacks import Thief, get_attack
from divqat.blackbox import BlackBoxVictim, defend, load_backend
from divqat.blackbox.victim import Backend
from divqat.configs import AttackConfig
from divqat.data import Splits, load_splits
from divqat.data.pools import query_pool, with_in_distribution
from divqat.defenses import Defense
from divqat.defenses.watermark import Record
from divqat.errors import DivqatError
from divqat.train.loop import Progress, predict_proba
from divqat.verify import verify

WATERMARK_RECORD = "watermark.safetensors"


def steal(
    answer: Backend,
    splits: Splits,
    config: AttackConfig,
    *,
    defenses: Sequence[Defense] = (),
    pool: Tensor | None = None,
    reference: Backend | None = None,
    data_root: Path | None = None,
    progress: Progress | None = None,
    record: Record | None = None,
) -> tuple[nn.Module, dict]:
    """The theft, in memory: the thief queries `answer` (behind `defenses`, within the budget)
    from `pool` (images; default: the config's named pool) and trains its surrogate; the
    test-set metrics compare it with `reference` (default `answer`; a served victim's own copy,
    so that measuring spends no key's queries). Returns the surrogate and the measurements.
    The attack sees the victim's oracle and the pool's images, never their labels. A watermark
    among the defenses records what it told this thief in `record` (when given)."""
    reference = reference or answer
    for defense in defenses:
        defense.fit(reference, splits)
    if pool is None and config.attack != "dfme":
        pool = query_pool(config.pool, splits, data_root).images
    if pool is not None and config.in_seeds:
        pool = with_in_distribution(pool, splits.thief_pool, config.in_seeds, config.seed)
    victim = BlackBoxVictim(answer, config.budget, defenses, record)
    generator = torch.Generator().manual_seed(config.seed)
    thief = Thief(config, pool, splits.input_shape, splits.num_classes, generator, progress)
    start = time.perf_counter()
    surrogate = get_attack(config.attack)(victim.oracle(), thief)
    seconds = time.perf_counter() - start

    test = splits.test
    clean = reference(test.images)
    defended = defend(clean, test.images, defenses)
    stolen = predict_proba(surrogate, test.images)
    victim_accuracy = metrics.accuracy(clean, test.labels)
    surrogate_accuracy = metrics.accuracy(stolen, test.labels)
    proof = verified(surrogate, victim.record)
    return surrogate, {
        **dataclasses.asdict(config),
        "defenses": [{"name": d.name, **d.params()} for d in defenses],
        "queries": victim.queries,
        "watermarked_answers": len(victim.record),
        "victim_accuracy": victim_accuracy,
        "defended_accuracy": metrics.accuracy(defended, test.labels),
        "defense_l1": (defended - clean).abs().sum(-1).mean().item(),
        "defense_kl": metrics.mean_kl(clean, defended),
        "surrogate_accuracy": surrogate_accuracy,
        "fidelity": metrics.agreement(stolen, clean),
        "extraction_ratio": surrogate_accuracy / victim_accuracy,
        "attack_seconds": seconds,
        "answer_seconds_per_query": victim.seconds / max(victim.queries, 1),
        **proof,
    }


def verified(surrogate: nn.Module, record: Record) -> dict:
    """The clone verified against what the watermark told its thief (nothing without a watermark)."""
    if not len(record):
        return {}
    (account,) = verify(lambda x: predict_proba(surrogate, x), {"thief": record}, max_queries=1000)["accounts"]
    return {f"watermark_{k}": v for k, v in account.items() if k != "account"}


def run_attack(
    victim_dir: Path,
    config: AttackConfig,
    out: Path | None,
    *,
    data_root: Path | None = None,
    backend: str = "onnx",
    url: str | None = None,
    key: str | None = None,
    defenses: tuple[Defense, ...] = (),
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """`divqat attack`: steal the victim of a run directory; write OUT/result.json and the surrogate."""
    if out is not None:
        artifacts.check_output(out, overwrite)
    victim_config, meta = artifacts.load_config(victim_dir)
    answer = load_backend(victim_dir, backend, url=url, key=key)
    if backend == "http" and config.budget > (remaining := answer.remaining):  # the server counts, not us
        raise DivqatError(f"budget {config.budget} is more than the {remaining} queries the key has left at {url}")
    # The test-set metrics use the victim's own copy: they must not spend a served key's queries.
    reference = load_backend(victim_dir, "onnx") if backend == "http" else answer
    splits = load_splits(victim_config.dataset, data_root)
    record = Record()
    surrogate, measured = steal(
        answer, splits, config, defenses=defenses, reference=reference, data_root=data_root, progress=progress,
        record=record,
    )  # fmt: skip
    result = {
        **measured,
        "victim": str(victim_dir),
        "victim_method": victim_config.method,
        "victim_alpha": victim_config.alpha if victim_config.method == "divqat" else 0.0,
        "victim_beta": victim_config.beta if victim_config.uses_outliers else 0.0,
        "backend": backend,
    }
    if out is not None:
        staging = artifacts.staging_for(out, "attack")
        try:
            artifacts.save_state(surrogate, staging / "surrogate.safetensors")
            if len(record):  # what the watermark told this thief: `divqat verify --record` reads it
                record.save(staging / WATERMARK_RECORD)
            artifacts.commit_run(staging, out, result, overwrite, name="result.json")
        except BaseException:
            artifacts.remove_run(staging)
            raise
    return result
