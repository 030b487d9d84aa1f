"""Choose DivQAT's outlier setting (form, beta, outlier mix) without touching evaluation data.

    python benchmarks/tune_outliers.py --out runs/tune --seeds 0
    python benchmarks/tune_outliers.py --out runs/tune --seeds 0 1 2 --only qat div-b1 shift-b1

Every number here avoids the data the results are reported on:
- the thief queries the *validation* pool (letters and matplotlib's sample pictures), never the
  digits or scikit-learn's photographs;
- accuracies (victim and thief) are measured on the thief's split, 10,000 Fashion-MNIST training
  images the victim never trains on, never on the test set.
The thief is the strongest recipe chosen against QAT (docs/divqat.md): `--surrogate`/`--epochs`.
Victims are written to OUT/seedS/NAME (resumable), thieves' results to OUT/seedS/NAME/thief-*.json.
"""

import argparse
import json
from pathlib import Path

import torch

from divqat import artifacts, metrics, pipeline
from divqat.attacks import Thief, create_attack
from divqat.blackbox import BlackBoxVictim, load_backend
from divqat.configs import AttackConfig, VictimConfig
from divqat.data import load_splits
from divqat.data.pools import query_pool
from divqat.train import predict_proba

FORMS = {"div": "divergence", "shift": "shift", "mis": "misinformation", "uni": "uniform", "argmin": "argmin"}


def candidates() -> dict[str, dict]:
    """name -> VictimConfig overrides, the most informative first (the script is resumable)."""
    out = {"qat": dict(method="qat")}
    for beta in (1.0, 3.0, 0.3):
        for short, form in FORMS.items():
            out[f"{short}-b{beta:g}"] = dict(method="divqat", alpha=0.0, beta=beta, outlier_loss=form)
    out["nt-js-a0.5"] = dict(method="divqat", alpha=0.5)
    for mix in ("noise,strokes,shapes,patch-shuffle", "noise,strokes,shapes,distort",
                "distort,noise,patch-shuffle,shapes,strokes"):  # fmt: skip
        out[f"div-b1-{mix.replace(',', '+')}"] = dict(method="divqat", alpha=0.0, beta=1.0, outliers=mix)
    out["div-b1-nt-js-a0.5"] = dict(method="divqat", alpha=0.5, beta=1.0)
    for epochs in (4, 6):  # longer training: CE can win back in-distribution accuracy
        out[f"qat-e{epochs}"] = dict(method="qat", epochs=epochs)
        for short in ("div", "argmin"):
            for beta in (1.0, 2.0, 3.0):
                out[f"{short}-b{beta:g}-e{epochs}"] = dict(
                    method="divqat", alpha=0.0, beta=beta, outlier_loss=FORMS[short], epochs=epochs
                )
    out["div-b0.5-e4"] = dict(method="divqat", alpha=0.0, beta=0.5, epochs=4)
    for beta in (1.0, 2.0, 3.0):
        for distill in (1.0, 3.0):
            out[f"div-b{beta:g}-e4-distill{distill:g}"] = dict(method="divqat", alpha=0.0, beta=beta, epochs=4,
                                                            distill=distill)  # fmt: skip
    return out


# The defaults this tuning ran under (before outlier-aware DivQAT became the default): what a
# variant does not set stays as it was measured.
BEFORE = {"alpha": 0.5, "divergence": "js", "non_target": True, "beta": 0.0, "distill": 0.0, "epochs": 2}


def steal(run: Path, splits, pool, labels: str, surrogate: str, epochs: int, seed: int, **adaptive) -> dict:
    config = AttackConfig(
        attack="knockoff", pool="validation", budget=10_000, labels=labels, surrogate=surrogate, epochs=epochs,
        seed=seed, **adaptive,
    )  # fmt: skip
    victim = BlackBoxVictim(load_backend(run), config.budget)
    thief = Thief(config, pool, splits.input_shape, splits.num_classes, torch.Generator().manual_seed(seed))
    model = create_attack("knockoff").steal(victim.oracle(), thief)
    held_out = splits.thief_pool
    return {"labels": labels, "accuracy": metrics.accuracy(predict_proba(model, held_out.images), held_out.labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tune"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--surrogate", default="cnn")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (two runs at once: 1 each)")
    parser.add_argument("--taus", type=float, nargs="*", default=[], help="also confidence-filtering thieves")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_splits("fashion-mnist")
    pool = query_pool("validation", splits).images
    held_out = splits.thief_pool
    for seed in args.seeds:
        fp = args.out / f"seed{seed}" / "fp"
        if not (fp / artifacts.METRICS).exists():
            pipeline.train(VictimConfig(method="fp", seed=seed), fp, overwrite=True)
        every = candidates()
        for name in args.only or every:  # in the order asked
            overrides = every[name]
            run = args.out / f"seed{seed}" / name
            if not (run / artifacts.METRICS).exists():
                pipeline.train(VictimConfig(seed=seed, **{**BEFORE, **overrides}), run, fp_from=fp, overwrite=True)
            answers = load_backend(run)(held_out.images)
            victim_accuracy = metrics.accuracy(answers, held_out.labels)
            thieves = [(labels, {}) for labels in ("soft", "hard")]
            thieves += [("soft", {"confidence_tau": tau}) for tau in args.taus]
            for labels, adaptive in thieves:
                suffix = "".join(f"-tau{v:g}" for v in adaptive.values())
                path = run / f"thief-{args.surrogate}-e{args.epochs}-{labels}{suffix}.json"
                if not path.exists():
                    result = steal(run, splits, pool, labels, args.surrogate, args.epochs, seed, **adaptive)
                    path.write_text(json.dumps({**result, "victim_accuracy": victim_accuracy}, indent=2))
                result = json.loads(path.read_text())
                print(f"seed {seed} {name:40s} victim {victim_accuracy:.4f} {labels}{suffix} thief "
                      f"{result['accuracy']:.4f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
