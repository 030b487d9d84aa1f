"""Proof of theft, measured (docs/divqat.md, "Proof of theft"): the watermark grid, then innocent
models and mark-washing thieves, all verified against the records the grid's thieves were told.

    python benchmarks/watermark_eval.py --results runs/watermark

1. `divqat run configs/watermark.yaml` (cached: a rerun recomputes nothing): QAT and
   outlier-aware DivQAT behind the watermark at rates 0.25 %, 0.5 %, 1 %, against KnockoffNets
   on the digits, photos and the thief split, top-1 labels, 500 in-distribution seeds and the
   ask-twice-and-drop-disagreements thief, 3 seeds; every attack job verifies its own clone.
2. Innocent models, verified against every account's record of each victim and seed (the
   verdict Bonferroni-corrected over those accounts, as `divqat verify` does): LeNet-5, cnn and
   ResNet-8 trained on Fashion-MNIST's true labels over seeds, and clones stolen from the QAT
   victims through a watermark with a *different* secret.
3. Mark-washing: each clone of the outlier-aware victim at 1 % (the thief split, soft labels) washed
   each way of `washes` (pruned, re-quantized, fine-tuned on its own labels, distilled into
   LeNet-5 three ways); each verified again.
Prints Markdown tables (and writes a plot of detection against clone accuracy to --plot).
"""

import argparse
import copy
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from divqat import artifacts
from divqat.configs import AttackConfig, VictimConfig
from divqat.data import load_splits
from divqat.data.augment import random_affine, sample_with_augmentation
from divqat.data.pools import query_pool
from divqat.defenses import create_defense
from divqat.defenses.watermark import Record
from divqat.experiments import load_experiment, run_experiment
from divqat.extraction import WATERMARK_RECORD, run_attack
from divqat.models import create_model
from divqat.quant import QuantConfig, calibrate, convert, prepare
from divqat.train.loop import TrainConfig, fit, predict_proba
from divqat.train.losses import cross_entropy
from divqat.train.victim import new_model, train_fp
from divqat.verify import verify

SIGNIFICANCE = 1e-6


def attack_jobs(results: Path) -> list[dict]:
    index = json.loads((results / "index.json").read_text())
    jobs = []
    for entry in index:
        if entry["level"] != "attack":
            continue
        directory = results / "jobs" / entry["directory"]
        if not (directory / "result.json").is_file():
            continue
        jobs.append({**entry, "dir": directory, "result": json.loads((directory / "result.json").read_text())})
    return jobs


def load_clone(job: dict, splits) -> torch.nn.Module:
    return load_surrogate(AttackConfig(**job["spec"]["attack"]).surrogate, job["dir"], splits)


def load_surrogate(architecture: str, directory: Path, splits) -> torch.nn.Module:
    """An attack job's stolen model (its `surrogate.safetensors`), in eval mode."""
    model = create_model(architecture, num_classes=splits.num_classes, input_shape=splits.input_shape)
    return artifacts.load_state(model, directory / "surrogate.safetensors").eval()


def answer_of(model):
    return lambda x: predict_proba(model, x)


def thief_name(spec: dict) -> str:
    a = spec["attack"]
    words = [a["pool"], a["labels"]]
    if a["in_seeds"]:
        words.append(f"+{a['in_seeds']} in-dist.")
    if a["consistency_noise"]:
        words.append(f"asks twice (noise {a['consistency_noise']:g})")
    return " ".join(words)


def pm(values, scale=100.0, digits=1) -> str:
    if len(values) == 1:
        return f"{values[0] * scale:.{digits}f} (n=1)"
    return f"{statistics.mean(values) * scale:.{digits}f} +- {statistics.stdev(values) * scale:.{digits}f}"


def reverify(jobs: list[dict], splits) -> None:
    """Each clone verified again now, against its own record (so that the table uses this
    release's test, whatever release ran the grid)."""
    for j in jobs:
        path = j["dir"] / WATERMARK_RECORD
        if path.is_file():
            (a,) = verify(answer_of(load_clone(j, splits)), {"thief": Record.load(path)})["accounts"]
            j["result"] |= {f"watermark_{k}": v for k, v in a.items() if k != "account"}


def detection_table(jobs: list[dict]) -> None:
    marked = [j for j in jobs if j["spec"]["defense"] and "watermark_p_value" in j["result"]]
    groups = defaultdict(list)
    for j in marked:
        groups[(j["labels"]["victim"], j["spec"]["defense"]["value"], thief_name(j["spec"]))].append(j)
    columns = ["victim", "rate", "thief", "clone acc %", "victim acc %", "verified", "max p", "mean mark rank",
               "top-1 matches / asked"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (victim, rate, name), got in sorted(groups.items()):
        r = [g["result"] for g in got]
        verified = sum(bool(x["watermark_stolen"]) for x in r)
        asked = "; ".join(f"{x['watermark_matches']}/{x['watermark_asked']}" for x in r)
        print(f"| {victim} | {rate:g} | {name} | {pm([x['surrogate_accuracy'] for x in r])} | "
              f"{pm([x['victim_accuracy'] for x in r])} | {verified}/{len(r)} | "
              f"{max(x['watermark_p_value'] for x in r):.1g} | "
              f"{statistics.mean(x['watermark_mean_rank'] for x in r):.2f} | {asked} |")  # fmt: skip
    print()
    costs = defaultdict(list)
    for j in marked:
        costs[(j["labels"]["victim"], j["spec"]["defense"]["value"])].append(
            j["result"]["defended_accuracy"] - j["result"]["victim_accuracy"]
        )
    print("| victim | rate | benign cost: served - unwatermarked accuracy on the test set (pp) |")
    print("| --- | --- | --- |")
    for (victim, rate), values in sorted(costs.items()):
        print(f"| {victim} | {rate:g} | {pm(values, 100, 2)} |")
    print()


def records_by_victim(jobs: list[dict]) -> dict[tuple, dict[str, Record]]:
    out = defaultdict(dict)
    for j in jobs:
        path = j["dir"] / WATERMARK_RECORD
        if path.is_file():
            out[(j["labels"]["victim"], j["labels"]["seed"])][j["dir"].name] = Record.load(path)
    return out


def trained_innocents(splits, seeds: list[int], counts=(("lenet5", 4), ("cnn", 4), ("resnet8", 3)),
                      cache: Path | None = None) -> dict:  # fmt: skip
    """{name: suspect} of models trained on Fashion-MNIST's true labels (the victims' training
    split): for each (architecture, n) of `counts`, the first n of `seeds` (as 100 + seed); kept in
    `cache` when given."""
    models = {}
    for arch, n in counts:
        for seed in seeds[:n]:
            epochs = 3 if arch == "resnet8" else 5
            config = VictimConfig(method="fp", model=arch, fp_epochs=epochs, fp_lr=3e-3, seed=100 + seed)
            path = cache / f"{arch}-{100 + seed}.safetensors" if cache else None
            if path and path.is_file():
                model = artifacts.load_state(new_model(config, splits), path)
            else:
                model, _ = train_fp(config, splits)
                if path:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    artifacts.save_state(model, path)
            models[f"{arch} on true labels, seed {100 + seed}"] = answer_of(model.eval())
    return models


def innocents(results: Path, jobs: list[dict], splits, seeds: list[int], key_b: Path, work: Path) -> dict:
    """Models that never saw these records: true labels, and clones through another secret."""
    models = trained_innocents(splits, seeds)
    victims = {j["labels"]["seed"]: results / "jobs" / j["needs"][0] for j in jobs if j["labels"]["victim"] == "qat"}
    other = create_defense("watermark", {"rate": 0.005, "secret_file": str(key_b)})
    for seed, victim in sorted(victims.items()):
        for pool in ("ood", "photos", "in"):
            out = work / f"other-secret-qat{seed}-{pool}"
            if not (out / "result.json").is_file():
                config = AttackConfig(pool=pool, budget=10_000, surrogate="cnn", epochs=10, seed=200 + seed)
                run_attack(victim, config, out, defenses=(other,), overwrite=True)
            model = create_model("cnn", num_classes=splits.num_classes, input_shape=splits.input_shape)
            clone = artifacts.load_state(model, out / "surrogate.safetensors").eval()
            models[f"clone of QAT seed {seed} through another secret ({pool})"] = answer_of(clone)
    return models


def innocent_table(models: dict, records: dict) -> None:
    flagged, tests, smallest = 0, 0, 1.0
    rows = []
    for name, model in models.items():
        hits, p_min = 0, 1.0
        for _, accounts in sorted(records.items()):
            result = verify(model, accounts, significance=SIGNIFICANCE, max_queries=10**6)
            tests += 1
            hits += any(a["stolen"] for a in result["accounts"])
            p_min = min([p_min, *(a["p_value"] for a in result["accounts"])])
        flagged += bool(hits)
        smallest = min(smallest, p_min)
        rows.append(f"| {name} | {len(records)} | {hits} | {p_min:.2g} |")
    print("| innocent model | victims x seeds verified against | flagged | smallest p-value |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"\nInnocent models flagged: {flagged} of {len(models)} ({tests} verifications, each over every "
          f"account of one victim and seed; smallest p-value {smallest:.2g}).\n")  # fmt: skip


def prune(model, fraction: float):
    washed = copy.deepcopy(model)
    weights = [m.weight for m in washed.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    threshold = torch.cat([w.detach().abs().flatten() for w in weights]).quantile(fraction)
    with torch.no_grad():
        for w in weights:
            w.mul_((w.abs() > threshold).float())
    return washed.eval()


def requantize(model, pool: torch.Tensor, input_shape):
    prepared = prepare(model, input_shape, QuantConfig(8, None), qat=False)
    calibrate(prepared, pool[:2048])
    return convert(prepared)


def relabel_train(model, student, pool: torch.Tensor, epochs: int, seed: int, soft: bool, lr: float | None = None,
                  augment: bool = True, images: int = 10_000):  # fmt: skip
    """Train `student` on `images` drawn from the pool (augmented copies once it is used up; a
    random view per epoch unless `augment` is False) labelled by `model` itself: no victim query."""
    g = torch.Generator().manual_seed(seed)
    inputs = sample_with_augmentation(pool, images, g)
    targets = predict_proba(model, inputs)
    data = {"inputs": inputs, "targets": targets if soft else targets.argmax(-1)}
    views = torch.Generator().manual_seed(seed + 1)
    lr = (1e-3 if soft else 1e-4) if lr is None else lr
    fit(student, data, cross_entropy, TrainConfig(epochs, 128, lr, seed=seed),
        transform=(lambda x: random_affine(x, views)) if augment else None)  # fmt: skip
    return student.eval()


def fresh_lenet5(splits, seed: int):
    """A LeNet-5 initialised from `seed` (not from the global generator: a rerun draws the same)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_model("lenet5", num_classes=splits.num_classes, input_shape=splits.input_shape)


def distil(clone, pool: torch.Tensor, splits, seed: int, lr: float = 1e-3, augment: bool = True, epochs: int = 20,
           images: int = 10_000):  # fmt: skip
    """The clone distilled again into a fresh LeNet-5 on its own soft answers to the thief's pool
    (`relabel_train`): the washes below and benchmarks/distill_strength.py."""
    student = fresh_lenet5(splits, DISTIL_SEED + seed)
    return relabel_train(clone, student, pool, epochs, DISTIL_SEED + seed, soft=True, lr=lr, augment=augment,
                         images=images)  # fmt: skip


DISTIL_SEED = 400  # + the thief's seed: the distilled student's initial weights, samples and views
DISTILLATIONS = {  # name -> (learning rate, a random view per epoch): the first one, then two stronger thieves
    "distilled into LeNet-5": (1e-3, True),
    "distilled into LeNet-5, not augmented, lr 3e-3": (3e-3, False),
    "distilled into LeNet-5, augmented, lr 1e-2": (1e-2, True),
}


def washes(clone, pool: torch.Tensor, splits, seed: int) -> dict[str, Callable[[], torch.nn.Module]]:
    """{wash: how to wash the clone that way} (nothing computed until called): none, pruned (50 %
    of its weights by magnitude), re-quantized (PTQ int8), fine-tuned 5 epochs on its own top-1
    labels of its own pool with fresh augmentation, and distilled into LeNet-5 (20 epochs on its
    own soft answers to its pool) three ways: augmented at learning rate 1e-3, as at first, then
    the stronger thieves of benchmarks/distill_strength.py - not augmented at 3e-3 (on QAT seed
    3's whole-split clone 2.1 pp below the victim, the marks partly kept) and augmented at 1e-2
    (3.8 pp below, none kept)."""
    out = {
        "none": lambda: clone,
        "pruned 50 %": lambda: prune(clone, 0.5),
        "re-quantized (PTQ int8)": lambda: requantize(clone, pool, splits.input_shape),
        "fine-tuned on its own top-1 labels, fresh augmentation": lambda: relabel_train(
            clone, copy.deepcopy(clone).train(), pool, 5, 300 + seed, soft=False),
    }  # fmt: skip
    for name, (lr, augment) in DISTILLATIONS.items():
        out[name] = lambda lr=lr, augment=augment: distil(clone, pool, splits, seed, lr, augment)
    return out


def washing_table(jobs: list[dict], splits) -> None:
    # The thief the watermark verifies (the one prevention cannot stop): the thief split at 1 %.
    chosen = [j for j in jobs if j["labels"]["victim"] == "outlier" and j["spec"]["defense"]
              and j["spec"]["defense"]["value"] == 0.01 and thief_name(j["spec"]) == "in soft"]  # fmt: skip
    pool = query_pool("in", splits).images
    test = splits.test
    rows = defaultdict(list)
    for j in sorted(chosen, key=lambda j: j["labels"]["seed"]):
        seed = j["labels"]["seed"]
        clone = load_clone(j, splits)
        record = {"thief": Record.load(j["dir"] / WATERMARK_RECORD)}
        for name, make in washes(clone, pool, splits, seed).items():
            model = make()
            (a,) = verify(answer_of(model), record, significance=SIGNIFICANCE)["accounts"]
            accuracy = (predict_proba(model, test.images).argmax(-1) == test.labels).float().mean().item()
            rows[name].append((accuracy, a["stolen"], a["p_value"], a["matches"], a["asked"]))
    print(
        "| wash (outlier-aware victim, rate 1 %, thief split, soft) | clone acc % | verified | max p | top-1 matches |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, got in rows.items():
        print(f"| {name} | {pm([g[0] for g in got])} | {sum(g[1] for g in got)}/{len(got)} | "
              f"{max(g[2] for g in got):.1g} | {'; '.join(f'{g[3]}/{g[4]}' for g in got)} |")  # fmt: skip
    print()


def plot(jobs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for j in jobs:
        r = j["result"]
        if "watermark_p_value" not in r:
            continue
        colour = {0.0025: "C0", 0.005: "C1", 0.01: "C2"}[j["spec"]["defense"]["value"]]
        ax.scatter(100 * r["surrogate_accuracy"], -math.log10(max(r["watermark_p_value"], 1e-300)), s=12, c=colour)
    for rate, colour in ((0.0025, "C0"), (0.005, "C1"), (0.01, "C2")):
        ax.scatter([], [], c=colour, label=f"rate {rate:g}")
    ax.axhline(-math.log10(SIGNIFICANCE), color="k", ls="--", lw=1, label="p = 1e-6")
    ax.set(
        xlabel="clone accuracy % (test set)", ylabel="-log10 p (own record)", title="Detection against clone accuracy"
    )
    ax.set_yscale("symlog")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("runs/watermark"))
    parser.add_argument("--config", type=Path, default=Path("configs/watermark.yaml"))
    parser.add_argument("--plot", type=Path, default=Path("docs/watermark-detection.png"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["innocents", "washing"])
    args = parser.parse_args()
    key = Path("runs/watermark.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(torch.randint(0, 256, (32,), dtype=torch.uint8).numpy().tobytes())
    run_experiment(load_experiment(args.config), args.results, jobs=2, quiet=True)
    splits = load_splits("fashion-mnist")
    jobs = attack_jobs(args.results)
    reverify(jobs, splits)
    detection_table(jobs)
    plot(jobs, args.plot)
    if "washing" not in args.skip:
        washing_table(jobs, splits)
    if "innocents" not in args.skip:
        key_b = Path("runs/watermark-other.key")
        if not key_b.exists():
            key_b.write_bytes(torch.randint(0, 256, (32,), dtype=torch.uint8).numpy().tobytes())
        models = innocents(args.results, jobs, splits, [0, 1, 2, 3], key_b, args.results.parent / "watermark-innocent")
        innocent_table(models, records_by_victim(jobs))


if __name__ == "__main__":
    main()
