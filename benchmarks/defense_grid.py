"""Post-hoc defenses on the QAT victim and on a DivQAT victim, against the out-of-distribution
soft-label KnockoffNets thief (10k queries): defender accuracy versus attacker accuracy.

    python benchmarks/defense_grid.py --shard 0/2 & python benchmarks/defense_grid.py --shard 1/2

Strength 0 of every defense is the undefended victim (the same run for all three).
"""

import argparse
from pathlib import Path

import torch

from divqat.attacks import AttackConfig
from divqat.defenses import create_defense
from divqat.extraction import run_attack

SWEEPS = {
    "reverse-sigmoid": ("beta", (0.01, 0.04, 0.16, 0.64), {"gamma": 0.2}),
    "mad": ("epsilon", (0.1, 0.3, 0.6, 1.0), {}),
    "dcp": ("beta", (0.7, 0.9, 0.97, 0.995), {"gamma": 0.2}),
}


def jobs(seeds, victims):
    for seed in seeds:
        for victim in victims:
            yield seed, victim, "none", None, {}
            for name, (key, values, fixed) in SWEEPS.items():
                for value in values:
                    yield seed, victim, name, value, {**fixed, key: value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--out", type=Path, default=Path("runs/defenses"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--victims", nargs="+", default=["qat", "nt-js-a1"])
    parser.add_argument("--budget", type=int, default=10000)
    parser.add_argument("--shard", default="0/1")
    args = parser.parse_args()
    torch.set_num_threads(1)
    index, count = map(int, args.shard.split("/"))
    for i, (seed, victim, name, value, params) in enumerate(jobs(args.seeds, args.victims)):
        out = args.out / victim / f"seed{seed}" / (f"{name}-{value:g}" if value is not None else name)
        if i % count != index or (out / "result.json").exists():
            continue
        defenses = () if name == "none" else (create_defense(name, params, seed=seed),)
        config = AttackConfig("knockoff", "ood", args.budget, "soft", seed=seed)
        r = run_attack(args.sweep / f"seed{seed}" / victim, config, out, defenses=defenses, overwrite=True)
        print(f"{victim:10s} seed {seed} {out.name:24s} defender {r['defended_accuracy']:.4f} "
              f"thief {r['surrogate_accuracy']:.4f} l1 {r['defense_l1']:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
