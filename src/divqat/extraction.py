"""`divqat attack`: steal a victim through its black-box interface and measure the theft."""

import time
from pathlib import Path

import torch

from divqat import artifacts, metrics
from divqat.attacks import AttackConfig, Thief, get_attack
from divqat.blackbox import BlackBoxVictim, defend, load_backend
from divqat.data import ImageSet, Splits, digits, get_dataset, load_splits
from divqat.data.augment import sample_with_augmentation
from divqat.defenses import Defense
from divqat.train import predict_proba


def ood_pool(splits: Splits, data_root: Path | None) -> ImageSet:
    """The thief's out-of-distribution pool: digits for (Fashion-)MNIST-sized victims, else the
    paired dataset of the protocol (CIFAR-10 -> CIFAR-100 queries and so on)."""
    name = get_dataset(splits.dataset).ood_pool
    channels, size, _ = splits.input_shape
    if name == "digits":
        return digits(size, channels)
    other = load_splits(name, data_root)
    images = other.victim_train.images
    if images.shape[1:] != splits.input_shape:
        images = torch.nn.functional.interpolate(images.mean(1, keepdim=True), size=(size, size))
        images = images.repeat(1, channels, 1, 1)
    return ImageSet(images, other.victim_train.labels)


def query_pool(kind: str, splits: Splits, data_root: Path | None) -> ImageSet:
    if kind == "in":
        return splits.thief_pool
    ood = ood_pool(splits, data_root)
    if kind == "ood":
        return ood
    # mixed: KnockoffNets' setting, a large pool that is mostly irrelevant: the whole thief-pool
    # split plus four times as many out-of-distribution images (augmented views where needed).
    inside = splits.thief_pool
    junk = sample_with_augmentation(ood.images, 4 * len(inside), torch.Generator().manual_seed(0))
    labels = torch.cat([torch.full((len(junk),), -1), inside.labels])  # -1: not a victim class
    return ImageSet(torch.cat([junk, inside.images]), labels)


def run_attack(
    victim_dir: Path,
    config: AttackConfig,
    out: Path | None,
    *,
    data_root: Path | None = None,
    backend: str = "onnx",
    defenses: tuple[Defense, ...] = (),
    overwrite: bool = False,
    quiet: bool = True,
) -> dict:
    if out is not None:
        artifacts.check_output(out, overwrite)
    attack = get_attack(config.attack)
    victim_config, meta = artifacts.load_config(victim_dir)
    answer = load_backend(victim_dir, backend)
    splits = load_splits(victim_config.dataset, data_root)
    for defense in defenses:
        defense.fit(answer, splits)
    pool = None if config.attack == "dfme" else query_pool(config.pool, splits, data_root)
    victim = BlackBoxVictim(answer, config.budget, defenses)
    thief = Thief(
        config, pool, splits.input_shape, splits.num_classes, torch.Generator().manual_seed(config.seed), quiet
    )
    start = time.perf_counter()
    surrogate = attack(victim, thief)
    seconds = time.perf_counter() - start

    test = splits.test
    clean = answer(test.images)
    defended = defend(clean, test.images, defenses)
    stolen = predict_proba(surrogate, test.images)
    victim_accuracy = metrics.accuracy(clean, test.labels)
    surrogate_accuracy = metrics.accuracy(stolen, test.labels)
    result = {
        **{k: getattr(config, k) for k in ("attack", "pool", "budget", "labels", "surrogate", "seed")},
        "victim": str(victim_dir),
        "victim_method": victim_config.method,
        "victim_alpha": victim_config.alpha if victim_config.method == "divqat" else 0.0,
        "backend": backend,
        "defenses": [{"name": d.name, **d.params()} for d in defenses],
        "queries": victim.queries,
        "victim_accuracy": victim_accuracy,
        "defended_accuracy": metrics.accuracy(defended, test.labels),
        "defense_l1": (defended - clean).abs().sum(-1).mean().item(),
        "defense_kl": metrics.mean_kl(clean, defended),
        "surrogate_accuracy": surrogate_accuracy,
        "fidelity": metrics.agreement(stolen, clean),
        "extraction_ratio": surrogate_accuracy / victim_accuracy,
        "attack_seconds": seconds,
        "answer_seconds_per_query": victim.seconds / max(victim.queries, 1),
    }
    if out is not None:
        staging = out.with_name(f".{out.name}.partial")
        staging.mkdir(parents=True, exist_ok=True)
        artifacts.save_state(surrogate, staging / "surrogate.safetensors")
        artifacts.commit_run(staging, out, result, overwrite, name="result.json")
    return result
