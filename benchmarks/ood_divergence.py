"""How far each victim's answers are from its FP model's, on its own test set and on the thief's
out-of-distribution queries (scikit-learn's digits).

    python benchmarks/ood_divergence.py --sweep runs/sweep

Mean KL(f_fp || f_victim) per victim and seed, through the deployed ONNX models.
"""

import argparse
from pathlib import Path

from divqat import artifacts, metrics
from divqat.data import digits, load_splits
from divqat.train import predict_proba

VICTIMS = ("qat", "paper-kl-a0.5", "nt-js-a0.5", "nt-js-a1", "nt-js-a2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    splits, pool = load_splits("fashion-mnist"), digits()
    print("| seed | victim | KL on test set | KL on digits | mean max prob on digits |")
    print("| --- | --- | --- | --- | --- |")
    for seed in args.seeds:
        fp = artifacts.load_fp(args.sweep / f"seed{seed}" / "fp")
        fp_test, fp_digits = predict_proba(fp, splits.test.images), predict_proba(fp, pool.images)
        for name in VICTIMS:
            victim = artifacts.load_onnx(args.sweep / f"seed{seed}" / name)
            on_test, on_digits = victim.predict_proba(splits.test.images), victim.predict_proba(pool.images)
            kl_test, kl_digits = metrics.mean_kl(fp_test, on_test), metrics.mean_kl(fp_digits, on_digits)
            print(f"| {seed} | {name} | {kl_test:.4f} | {kl_digits:.4f} | {metrics.mean_max_prob(on_digits):.3f} |")


if __name__ == "__main__":
    main()
