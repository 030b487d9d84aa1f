"""`divqat attack`: steal a victim through its black-box interface and measure the theft."""

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from divqat import artifacts, metrics
from divqat.attacks import Thief, create_attack
from divqat.blackbox import BlackBoxVictim, defend, load_backend
from divqat.blackbox.victim import Backend
from divqat.configs import AttackConfig
from divqat.data import ImageSet, Splits, load_splits
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
    surrogate: nn.Module | None = None,
) -> tuple[nn.Module, dict]:
    """The theft and its measurement, as `divqat attack` and grids run it: the defenses are fit
    on the victim's data, the thief queries `answer` (behind `defenses`, within the budget) from
    `pool` (images; default: the config's named pool) and trains its surrogate (`extract`); the
    test set then measures it against `reference` (default `answer`; a served victim's own copy,
    so that measuring spends no key's queries: `evaluate`). Returns the surrogate and the
    measurements. A watermark among the defenses records what it told this thief in `record`."""
    reference = reference or answer
    for defense in defenses:
        defense.fit(reference, splits)
    pool = thief_pool(config, splits, pool, data_root)
    record = Record() if record is None else record
    stolen, books = extract(answer, config, pool, splits.input_shape, splits.num_classes, defenses=defenses,
                            surrogate=surrogate, progress=progress, record=record)  # fmt: skip
    measured = evaluate(stolen, splits.test, reference, defenses)
    return stolen, {
        **dataclasses.asdict(config),
        "defenses": [{"name": d.name, **d.params()} for d in defenses],
        **books,
        **measured,
        **verified(stolen, record),
    }


def thief_pool(config: AttackConfig, splits: Splits, pool: Tensor | None = None, data_root: Path | None = None):
    """The images the thief queries from: `pool`, or the config's named pool (none for DFME),
    with the config's in-distribution seeds mixed in."""
    if pool is None and config.attack != "dfme":
        pool = query_pool(config.pool, splits, data_root).images
    if pool is not None and config.in_seeds:
        pool = with_in_distribution(pool, splits.thief_pool, config.in_seeds, config.seed)
    return pool


def extract(
    answer: Backend,
    config: AttackConfig,
    pool: Tensor | None,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    defenses: Sequence[Defense] = (),
    surrogate: nn.Module | None = None,
    progress: Progress | None = None,
    record: Record | None = None,
) -> tuple[nn.Module, dict]:
    """The theft alone: the config's attack (with its params) asks `answer` behind `defenses`
    (already fit) within the budget, from `pool` (unlabelled images; None for data-free
    attacks), and trains its surrogate - a copy of `surrogate` when given (raw [0, 1] pixels
    in), else the config's architecture. Returns it and the books: queries spent, seconds."""
    victim = BlackBoxVictim(answer, config.budget, defenses, record)
    generator = torch.Generator().manual_seed(config.seed)
    thief = Thief(config, pool, input_shape, num_classes, generator, progress, surrogate)
    start = time.perf_counter()
    stolen = create_attack(config.attack, config.params).steal(victim.oracle(), thief)
    return stolen, {
        "queries": victim.queries,
        "watermarked_answers": len(victim.record),
        "attack_seconds": time.perf_counter() - start,
        "answer_seconds_per_query": victim.seconds / max(victim.queries, 1),
    }


def evaluate(
    surrogate: nn.Module, test: ImageSet, reference: Backend | None = None, defenses: Sequence[Defense] = ()
) -> dict:
    """A clone measured on a labelled test set: its accuracy; with the victim's answers
    (`reference`, asked outside any budget), also the victim's plain and defended accuracy,
    the defenses' cost (L1, KL), the clone's agreement with the victim (fidelity) and the
    extraction ratio."""
    stolen = predict_proba(surrogate, test.images)
    surrogate_accuracy = metrics.accuracy(stolen, test.labels)
    if reference is None:
        return {"surrogate_accuracy": surrogate_accuracy}
    clean = reference(test.images)
    defended = defend(clean, test.images, defenses)
    victim_accuracy = metrics.accuracy(clean, test.labels)
    return {
        "victim_accuracy": victim_accuracy,
        "defended_accuracy": metrics.accuracy(defended, test.labels),
        "defense_l1": (defended - clean).abs().sum(-1).mean().item(),
        "defense_kl": metrics.mean_kl(clean, defended),
        "surrogate_accuracy": surrogate_accuracy,
        "fidelity": metrics.agreement(stolen, clean),
        "extraction_ratio": surrogate_accuracy / victim_accuracy,
    }


def verified(surrogate: nn.Module, record: Record) -> dict:
    """The clone verified against what its thief was told: `watermark_*` (the watermark's marks)
    and `order_*` (scramble's orders), each from at most 1,000 of its queries; nothing without either."""
    if not record.told:
        return {}
    tests = (len(record) > 0) + (len(record.orders) > 0)  # each its own 1,000 queries
    verdicts = verify(lambda x: predict_proba(surrogate, x), {"thief": record}, max_queries=1000 * tests)["accounts"]
    return {f"{t['test']}_{k}": v for t in verdicts for k, v in t.items() if k not in ("account", "test")}


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
            if record.told:  # what the watermark or scramble told this thief: `divqat verify --record` reads it
                record.save(staging / WATERMARK_RECORD)
            artifacts.commit_run(staging, out, result, overwrite, name="result.json")
        except BaseException:
            artifacts.remove_run(staging)
            raise
    return result
