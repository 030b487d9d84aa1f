"""Extraction attacks against the QAT and DivQAT victims of benchmarks/sweep_alpha.py.

    python benchmarks/attack_grid.py --sweep runs/sweep --out runs/attacks --shard 0/2 &
    python benchmarks/attack_grid.py --sweep runs/sweep --out runs/attacks --shard 1/2

Headline: KnockoffNets on the out-of-distribution pool (digits, augmented past 1,797), soft and
top-1 labels, budgets 1k/5k/10k. Then adaptive KnockoffNets, JBDA (in-distribution seed set)
and DFME at 10k. The thief's seed is the victim's. One thread per process: on small models two
single-threaded shards use two cores better than one two-threaded process. Resumable.
"""

import argparse
from pathlib import Path

import torch

from divqat.attacks import AttackConfig
from divqat.extraction import run_attack

VICTIMS = ("qat", "paper-kl-a0.5", "nt-js-a0.5", "nt-js-a1")


def grid(seeds, victims):
    for seed in seeds:
        for victim in victims:
            for labels in ("soft", "hard"):
                for budget in (1000, 5000, 10000):
                    yield seed, victim, AttackConfig("knockoff", "ood", budget, labels, seed=seed)
                for attack, pool in (("knockoff-adaptive", "ood"), ("jbda", "in"), ("dfme", "ood")):
                    yield seed, victim, AttackConfig(attack, pool, 10000, labels, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--out", type=Path, default=Path("runs/attacks"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--victims", nargs="+", default=list(VICTIMS))
    parser.add_argument("--attacks", nargs="+", default=None, help="Only these attacks.")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    index, count = map(int, args.shard.split("/"))
    for i, (seed, victim, config) in enumerate(grid(args.seeds, args.victims)):
        if i % count != index or (args.attacks and config.attack not in args.attacks):
            continue
        name = f"{config.attack}-{config.pool}-{config.budget}-{config.labels}"
        out = args.out / victim / f"seed{seed}" / name
        if (out / "result.json").exists():
            continue
        r = run_attack(args.sweep / f"seed{seed}" / victim, config, out, overwrite=True)
        print(
            f"{victim:14s} seed {seed} {name:32s} thief {r['surrogate_accuracy']:.4f} fidelity {r['fidelity']:.4f} "
            f"victim {r['victim_accuracy']:.4f} {r['attack_seconds']:.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
