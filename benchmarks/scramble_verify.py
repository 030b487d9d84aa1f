"""Does `scramble` mark every soft-label clone? A probe for issue 15, on configs/insiders.yaml's clones.

    python benchmarks/scramble_verify.py --grid runs/insiders --probes 1000

`scramble` (defenses/dark_knowledge.py) answers every image with the victim's top-1 and its
probability, and the other classes in a keyed order. A model that never learnt from those
answers ranks the other classes independently of the key, so given that its top-1 is the
victim's, its runner-up is the served runner-up with probability exactly 1 / (K - 1): the keyed
permutation is uniform. A clone can only have learnt the keyed order on the images it was
answered (the order is a keyed hash of each image: nothing to generalise), so the owner asks a
suspect the first `--probes` queries of the account (what a server's record would keep;
rebuilt here from the thief's seed, KnockoffNets' sampling being deterministic), counts the
runner-up matches among those whose top-1 agrees with the victim's and whose served runner-up
is not tied (a tie breaks by class index, not by the key), and takes the exact binomial tail
(scipy) as the p-value. (Asked fresh test images instead, the marked clones match at the null
rate: they learn the order of their own queries only.)
Suspects: every clone of configs/insiders.yaml - stolen through `scramble` (the marked ones),
and, as innocents, those stolen from the same victims undefended or behind `flatten` and the
top-1 clones (none of which saw a scrambled ranking). Prints the verified fraction per group at
p < 1e-6 and the p-values' range; writes nothing.
"""

import argparse
import json
from pathlib import Path

import torch
from scipy.stats import binom

from divqat import artifacts
from divqat.blackbox import load_backend
from divqat.configs import AttackConfig, field_names
from divqat.data import load_splits
from divqat.data.augment import sample_with_augmentation
from divqat.defenses import create_defense
from divqat.extraction import thief_pool
from divqat.models import create_model
from divqat.train import predict_proba

SIGNIFICANCE = 1e-6


def runner_up(probs: torch.Tensor) -> torch.Tensor:
    return probs.topk(2, -1).indices[:, 1]


def p_value(suspect: torch.Tensor, served: torch.Tensor) -> tuple[int, int, float]:
    """(images counted, runner-up matches among them, exact binomial p-value)."""
    top3 = served.topk(3, -1).values
    agree = (suspect.argmax(-1) == served.argmax(-1)) & (top3[:, 1] > top3[:, 2])
    matches = int((runner_up(suspect)[agree] == runner_up(served)[agree]).sum())
    asked = int(agree.sum())
    return asked, matches, float(binom.sf(matches - 1, asked, 1 / (served.shape[1] - 1)))


def account_queries(config: AttackConfig, splits) -> torch.Tensor:
    """The images KnockoffNets (random) asked with this config, in order (attacks/knockoff.py)."""
    pool = thief_pool(config, splits)
    return sample_with_augmentation(pool, config.budget, torch.Generator().manual_seed(config.seed))


def group_of(result: dict) -> str:
    defense = result["defenses"][0]["name"] if result["defenses"] else "none"
    return f"{'top-1' if result['labels'] == 'hard' else 'soft'} clone, victim answers {defense}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=Path("runs/insiders"))
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--secret", type=Path, default=Path("runs/watermark.key"), help="scramble's, as in the grid")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    splits = load_splits("fashion-mnist", args.data_root)
    scramble = create_defense("scramble", {"secret_file": str(args.secret)})
    victims = {}
    groups: dict[str, list[tuple[int, int, float]]] = {}
    for path in sorted(args.grid.glob("jobs/attack-*/result.json")):
        result = json.loads(path.read_text())
        config = AttackConfig(**{k: result[k] for k in field_names(AttackConfig)})
        probes = account_queries(config, splits)[: args.probes]
        victim = victims.setdefault(result["victim"], load_backend(Path(result["victim"]), "onnx"))
        served = scramble(victim(probes), probes)
        model = create_model(config.surrogate, num_classes=splits.num_classes, input_shape=splits.input_shape)
        artifacts.load_state(model, path.parent / "surrogate.safetensors")
        groups.setdefault(group_of(result), []).append(p_value(predict_proba(model, probes), served))
    print(f"| suspects | models | verified at p < {SIGNIFICANCE:g} | match rate (null {1 / 9:.3f}) | p-values |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in sorted(groups.items()):
        verified = sum(p < SIGNIFICANCE for _, _, p in values)
        rate = sum(m for _, m, _ in values) / max(sum(a for a, _, _ in values), 1)
        low, high = min(p for *_, p in values), max(p for *_, p in values)
        print(f"| {name} | {len(values)} | {verified} / {len(values)} | {rate:.3f} | {low:.1e} .. {high:.1e} |")


if __name__ == "__main__":
    main()
