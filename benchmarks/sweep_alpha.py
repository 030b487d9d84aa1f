"""The DivQAT accuracy/divergence table on Fashion-MNIST: FP, PTQ, QAT and DivQAT forms x alphas x seeds.

One FP model per seed; every quantized victim starts from it. Resumable: a run directory that
already has metrics.json is not recomputed. Aggregate with benchmarks/table_alpha.py.

    python benchmarks/sweep_alpha.py --out runs/sweep --seeds 0 1 2
"""

import argparse
from pathlib import Path

from divqat import pipeline
from divqat.configs import VictimConfig

# name -> VictimConfig overrides. "paper" is the unbounded KL of the paper, the rest are bounded.
FORMS = {
    "paper-kl": dict(divergence="kl", non_target=False),
    "kl-floor": dict(divergence="kl", non_target=False, logq_floor=1e-3),
    "kl-hinge": dict(divergence="kl", non_target=False, hinge=1.0),
    "js": dict(divergence="js", non_target=False),
    "nt-js": dict(divergence="js", non_target=True),
}
ALPHAS = {
    "paper-kl": (0.1, 0.3, 0.5, 1.0),
    "kl-floor": (0.5, 1.0),
    "kl-hinge": (1.0, 3.0),
    "js": (1.0, 2.0),
    "nt-js": (0.5, 1.0, 2.0, 3.0),
}


def jobs(seed: int):
    yield "ptq", dict(method="ptq")
    yield "qat", dict(method="qat")
    for form, overrides in FORMS.items():
        for alpha in ALPHAS[form]:
            yield f"{form}-a{alpha:g}", dict(method="divqat", alpha=alpha, **overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fp-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="Run only these job names.")
    args = parser.parse_args()
    for seed in args.seeds:
        base = dict(seed=seed, epochs=args.epochs, fp_epochs=args.fp_epochs, train_limit=args.train_limit)
        fp_dir = args.out / f"seed{seed}" / "fp"
        if not (fp_dir / "metrics.json").exists():
            pipeline.train(VictimConfig(method="fp", **base), fp_dir, overwrite=True)
        for name, overrides in jobs(seed):
            run = args.out / f"seed{seed}" / name
            if (args.only and name not in args.only) or (run / "metrics.json").exists():
                continue
            result = pipeline.train(
                VictimConfig(beta=0.0, distill=0.0, **base, **overrides), run, fp_from=fp_dir, overwrite=True
            )  # the objective alone: no outlier term
            print(
                f"seed {seed} {name:16s} int8 {result['int8_accuracy']:.4f} kl {result['kl_fp_int8']:.4f}", flush=True
            )


if __name__ == "__main__":
    main()
