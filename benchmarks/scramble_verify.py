"""Does `scramble` mark every soft-label clone? `divqat verify`'s order test on configs/insiders.yaml's clones.

    python benchmarks/scramble_verify.py --grid runs/insiders --probes 1000 --plot docs/order-detection.png

`scramble` (defenses/dark_knowledge.py) answers every image with the victim's top-1 and its
probability, and the other classes in a keyed order. Each clone's account is rebuilt from the
thief's seed (KnockoffNets' sampling is deterministic) and answered through the black box with
a record kept, as a grid or `divqat serve` keeps it (defenses/orders.py: the first 2,000
distinct codes); the clone is then verified as `divqat verify` does (divqat/verify_order.py:
the correlation of its orders with the served ones, the victim's own removed, Bernstein's bound
as the p-value), from the record's first `--probes` images. Suspects: every clone of the grid -
stolen through `scramble` (the marked ones) and, as innocents, those stolen from the same
victims undefended or behind `flatten` and the top-1 clones (none of which saw a scrambled
order). `--fresh` asks test images instead of the account's (a clone cannot have learnt their
keyed order: the null). `--wash` then washes the marked clones of the outlier-aware victim
(N = 500 and the whole split, 3 seeds) as benchmarks/watermark_eval.py washes its clones:
pruned, re-quantized, fine-tuned on their own top-1 labels of their own pool with fresh
augmentation, distilled into LeNet-5. Prints the verified fraction per group at p < 1e-6, and
per seed for the marked clones (the test was chosen on seed 0's); writes nothing.
"""

import argparse
import json
from pathlib import Path

import torch
from watermark_eval import load_surrogate, washes

from divqat.blackbox import load_backend
from divqat.blackbox.victim import defend
from divqat.configs import LATER_KNOBS, AttackConfig, field_names
from divqat.data import load_splits
from divqat.data.augment import sample_with_augmentation
from divqat.defenses import create_defense
from divqat.defenses.watermark import Record
from divqat.extraction import thief_pool
from divqat.train import predict_proba
from divqat.verify import verify

SIGNIFICANCE = 1e-6


def account_queries(config: AttackConfig, splits) -> torch.Tensor:
    """The images KnockoffNets (random) asked with this config, in order (attacks/knockoff.py)."""
    pool = thief_pool(config, splits)
    return sample_with_augmentation(pool, config.budget, torch.Generator().manual_seed(config.seed))


def told(victim, scramble, images: torch.Tensor) -> Record:
    """What the account was told, recorded as the black box records it."""
    record = Record()
    for batch in images.split(1000):
        defend(victim(batch), batch, [scramble], record)
    return record


def group_of(result: dict) -> str:
    defense = result["defenses"][0]["name"] if result["defenses"] else "none"
    return f"{'top-1' if result['labels'] == 'hard' else 'soft'} clone, victim answers {defense}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/insiders"))
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--fresh", action="store_true", help="ask test images, not the account's")
    parser.add_argument("--wash", action="store_true", help="also wash the outlier-aware victim's marked clones")
    parser.add_argument("--plot", type=Path, default=None, help="write detection against clone accuracy here")
    parser.add_argument("--secret", type=Path, default=Path("runs/watermark.key"), help="scramble's, as in the grid")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    splits = load_splits("fashion-mnist", args.data_root)
    scramble = create_defense("scramble", {"secret_file": str(args.secret)})
    victims, washed = {}, []
    groups: dict[str, list[tuple[int, dict]]] = {}
    for path in sorted(args.grid.glob("jobs/attack-*/result.json")):
        result = json.loads(path.read_text())
        known = {**LATER_KNOBS, **result}  # a job finished before a knob was added ran at its default
        config = AttackConfig(**{k: known[k] for k in field_names(AttackConfig)})
        victim = victims.setdefault(result["victim"], load_backend(Path(result["victim"]), "onnx"))
        asked = splits.test.images if args.fresh else account_queries(config, splits)
        record = told(victim, scramble, asked)
        model = load_surrogate(config.surrogate, path.parent, splits)
        (verdict,) = verify(lambda x, m=model: predict_proba(m, x), {"account": record},
                            significance=SIGNIFICANCE, max_queries=args.probes)["accounts"]  # fmt: skip
        gap = 100 * (result["victim_accuracy"] - result["surrogate_accuracy"])
        verdict["clone_accuracy"] = 100 * result["surrogate_accuracy"]
        where = "whole split" if config.pool == "in" else f"N = {config.in_seeds}"
        groups.setdefault(group_of(result), []).append((config.seed, verdict | {"gap": gap, "where": where}))
        if args.wash and "scramble" in group_of(result) and result["victim_beta"] > 0 and (
                config.pool == "in" or config.in_seeds == 500) and "soft" in group_of(result):  # fmt: skip
            washed.append((where, wash(model, record, thief_pool(config, splits), splits, config.seed)))
    source = "test images" if args.fresh else "the account's images"
    print(f"{args.probes} suspect queries per clone ({source})")
    print(f"| suspects | models | verified at p < {SIGNIFICANCE:g} | mean correlation (null 0) | p-values |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in sorted(groups.items()):
        ps = [v["p_value"] for _, v in values]
        verified = sum(v["stolen"] for _, v in values)
        mean = sum(v["mean_correlation"] for _, v in values) / len(values)
        print(f"| {name} | {len(values)} | {verified} / {len(values)} | {mean:.3f} | {min(ps):.1e} .. {max(ps):.1e} |")
    for name, values in sorted(groups.items()):
        if "scramble" in name:
            near = [v for _, v in values if v["gap"] <= 10]
            print(f"{name}s within 10 pp of the victim: {sum(v['stolen'] for v in near)} / {len(near)}")
            for where in dict.fromkeys(v["where"] for _, v in values):
                got = [v for _, v in values if v["where"] == where]
                print(f"  {where}: {sum(v['stolen'] for v in got)} / {len(got)} (victim - clone "
                      f"{min(v['gap'] for v in got):.1f} .. {max(v['gap'] for v in got):.1f} pp), "
                      f"p {min(v['p_value'] for v in got):.1e} .. {max(v['p_value'] for v in got):.1e}")  # fmt: skip
            for seed in sorted({s for s, _ in values}):
                got = [v for s, v in values if s == seed]
                print(f"{name}, seed {seed}: {sum(v['stolen'] for v in got)} / {len(got)}, "
                      f"largest p {max(v['p_value'] for v in got):.1e}, "
                      f"mean r {sum(v['mean_correlation'] for v in got) / len(got):.3f}")  # fmt: skip
    if args.plot:
        plot(groups, args.plot)
    if washed:
        print("\n| wash (outlier-aware victim behind scramble, soft thief) | thief | clone acc % | verified | p |")
        print("| --- | --- | --- | --- | --- |")
        for name in washed[0][1]:
            for where in dict.fromkeys(w for w, _ in washed):
                got = [row[name] for w, row in washed if w == where]
                accuracy = torch.tensor([a for a, _ in got])
                print(f"| {name} | {where} | {100 * accuracy.mean():.1f} +- {100 * accuracy.std():.1f} | "
                      f"{sum(p < SIGNIFICANCE for _, p in got)}/{len(got)} | "
                      f"{min(p for _, p in got):.1e} .. {max(p for _, p in got):.1e} |")  # fmt: skip


def plot(groups: dict[str, list[tuple[int, dict]]], path: Path) -> None:
    """-log10 p against clone accuracy, one colour per group of suspects."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (name, values) in enumerate(sorted(groups.items())):
        x = [v["clone_accuracy"] for _, v in values]
        y = [-math.log10(max(v["p_value"], 1e-300)) for _, v in values]
        ax.scatter(x, y, s=12, c=f"C{i}", label=name)
    ax.axhline(-math.log10(SIGNIFICANCE), color="k", ls="--", lw=1, label="p = 1e-6")
    ax.set(xlabel="clone accuracy % (test set)", ylabel="-log10 p (order test, own record)",
           title="Order test from 1,000 queries against clone accuracy")  # fmt: skip
    ax.set_yscale("symlog")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def wash(clone, record: Record, pool: torch.Tensor, splits, seed: int) -> dict[str, tuple[float, float]]:
    """{wash: (test accuracy, p-value)} of the clone washed each way, verified from 1,000 queries."""
    out = {}
    for name, make in washes(clone, pool, splits, seed).items():
        model = make()
        (verdict,) = verify(lambda x, m=model: predict_proba(m, x), {"account": record}, max_queries=1000)["accounts"]
        accuracy = (predict_proba(model, splits.test.images).argmax(-1) == splits.test.labels).float().mean().item()
        out[name] = (accuracy, verdict["p_value"])
    return out


if __name__ == "__main__":
    main()
