"""A mark a clone learns as a rule, so that distilling the clone again keeps it - a probe of its
ceiling against a top-1 thief (docs/divqat.md, "A mark learned as a rule").

    python benchmarks/rule_mark.py --victim runs/order/jobs/victim-fa62347171975435  # QAT seed 0

The watermark's marks are keyed per image: a clone memorises them and a student distilled from it
on other images loses most of them. A keyed *rule* is learnable instead: every image whose 7x7
thumbnail projects beyond a threshold on a keyed direction (the top `rate` of the owner's own
images: a slab of the input space; with --slabs, several directions sharing the rate, the first
slab an image is in) is answered pi_j(v) in place of the victim's top-1 v, pi_j a keyed map of
slab j with pi_j(v) uniform over the K - 1 other classes (swapped as the watermark swaps, served at
0.9). The proof then needs no record: the owner asks the suspect its own fresh images in the slab.
The test is exact but its evidence is capped: pi_j(v) is one keyed draw per group (a slab j and
a victim class v), so with G groups among the fresh images no p-value falls below (K - 1) ** -G
(here the marks' residual z-scores, `verify.residual_z`, averaged per group and summed,
`verify.score_sum_p_value`).

The thief: KnockoffNets (cnn, 10,000 queries, 10 epochs) reading top-1 labels, on the owner's
training images 20,000-50,000 (in-distribution, and neither the thief split nor an evaluation
pool: a probe on the validation side); its clone is then distilled into LeNet-5 as the strong
washing thieves of benchmarks/watermark_eval.py distil (not augmented at 3e-3, augmented at
1e-2). Innocents: the grid's undefended clones of the same victim. Fresh images: the owner's first
20,000 in the slab. Measured: docs/divqat.md.
"""

import argparse
import hashlib
import hmac
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from watermark_eval import DISTILLATIONS, distil, load_surrogate

from divqat.blackbox import load_backend
from divqat.configs import AttackConfig
from divqat.data import load_splits
from divqat.defenses.registry import Defense
from divqat.defenses.watermark import lifted
from divqat.extraction import steal
from divqat.train import predict_proba
from divqat.verify import residual_z, score_sum_p_value

ATTACK = {"attack": "knockoff", "budget": 10_000, "surrogate": "cnn", "epochs": 10, "schedule": "constant"}
OWN_FRESH, OWN_THIEF = slice(0, 20_000), slice(20_000, 50_000)  # the owner's images: the slab's and the thief's


@dataclass
class SlabMark(Defense):
    """Answers pi_j(v) on every image beyond `thresholds[j]` on the j-th keyed direction (the first
    such j; a probe, not registered)."""

    secret: bytes = b""
    classes: int = 10
    slabs: int = 1
    mark_probability: float = 0.9
    uses_images = True
    thresholds: Tensor = field(init=False, repr=False)
    directions: Tensor = field(init=False, repr=False)
    pi: Tensor = field(init=False, repr=False)  # (slabs, K)

    def __post_init__(self):
        def draw(label: bytes) -> int:
            return int.from_bytes(hmac.new(self.secret, label, hashlib.sha256).digest()[:8], "little")

        g = torch.Generator().manual_seed(draw(b"slab directions") >> 1)
        d = torch.randn(self.slabs, 49, generator=g, dtype=torch.float64)
        self.directions = d / d.norm(dim=1, keepdim=True)
        self.thresholds = torch.full((self.slabs,), float("inf"), dtype=torch.float64)
        k = self.classes
        self.pi = torch.tensor([[(v + 1 + draw(b"slab %d class %d" % (j, v)) % (k - 1)) % k for v in range(k)]
                                for j in range(self.slabs)])  # fmt: skip

    def calibrate(self, images: Tensor, rate: float) -> None:
        """Each slab the top rate / slabs of the owner's images on its direction."""
        self.thresholds = self.project(images).quantile(1 - rate / self.slabs, dim=0)

    def project(self, images: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(images.detach().cpu().double(), 7).flatten(1) @ self.directions.T

    def slab(self, images: Tensor) -> Tensor:
        """(N,) the first slab each image is in; -1: none."""
        beyond = self.project(images) > self.thresholds
        return torch.where(beyond.any(1), beyond.long().argmax(1), -1)

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        slab = self.slab(images)
        rows = (slab >= 0).nonzero().squeeze(1)
        if not len(rows):
            return probs
        out = probs.clone()
        top = probs[rows].argmax(-1).cpu()
        mark = self.pi[slab[rows], top].to(probs.device)
        rows, top = rows.to(probs.device), top.to(probs.device)
        p_top, p_mark = out[rows, top].clone(), out[rows, mark].clone()
        out[rows, top], out[rows, mark] = p_mark, p_top
        out[rows] = lifted(out[rows], mark, self.mark_probability)
        return out


def rule_p_value(answers: Tensor, natural: Tensor, slab: Tensor, pi: Tensor) -> tuple[float, int]:
    """(exact p, groups G): per group (slab j, victim class v) among the images, the suspect's
    residual z-scores averaged; pi_j(v)'s summed over the groups against each pi_j(v) uniform over
    the K - 1 classes other than v, independently."""
    top1 = natural.argmax(-1)
    z = residual_z(answers, natural, top1)
    groups = sorted({(int(j), int(v)) for j, v in zip(slab, top1, strict=True)})
    scores = torch.stack([z[(slab == j) & (top1 == v)].mean(0) for j, v in groups])
    classes = torch.tensor([v for _, v in groups])
    marks = torch.tensor([int(pi[j, v]) for j, v in groups])
    return score_sum_p_value(scores, classes, marks, 0.01), len(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victim", type=Path, required=True, help="a victim run directory (runs/order/jobs/victim-*)")
    parser.add_argument("--grid", type=Path, default=Path("runs/order"), help="where its undefended clones are")
    parser.add_argument("--rate", type=float, default=0.005, help="the slab's share of the owner's own images")
    parser.add_argument("--slabs", type=int, default=1, help="keyed directions, each with its own map, sharing --rate")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_splits("fashion-mnist")
    seed = json.loads((args.victim / "config.json").read_text())["victim"]["seed"]
    victim = load_backend(args.victim, "onnx")
    own = splits.victim_train.images
    secret = random.Random(f"slab {args.victim.name}").randbytes(32)  # deliberately not secret: a reproducible probe
    mark = SlabMark(secret=secret, classes=splits.num_classes, slabs=args.slabs)
    mark.calibrate(own[OWN_FRESH], args.rate)
    where = mark.slab(own[OWN_FRESH])
    fresh, fresh_slab = own[OWN_FRESH][where >= 0][:1000], where[where >= 0][:1000]
    natural = victim(fresh)
    test = splits.test
    clean = victim(test.images)
    served = mark(clean, test.images)
    cost = (clean.argmax(-1) == test.labels).float().mean() - (served.argmax(-1) == test.labels).float().mean()
    thief_images = own[OWN_THIEF]
    config = AttackConfig(**ATTACK, labels="hard", seed=seed)
    clone, result = steal(victim, splits, config, defenses=(mark,), pool=thief_images)
    marked = int((mark.slab(thief_images) >= 0).sum())
    print(f"{args.victim.name} (seed {seed}), rate {args.rate:g} over {args.slabs} slab(s): benign cost "
          f"{100 * cost:.2f} pp, victim {100 * result['victim_accuracy']:.1f} %, {marked} of the thief's pool's "
          f"{len(thief_images)} images in a slab, fresh slab images {len(fresh)}")  # fmt: skip
    print("| model | accuracy % | top-1 = pi(v) on fresh slab images | rule p (exact) | groups |")
    print("| --- | --- | --- | --- | --- |")
    models = {"clone": clone}
    for name, (lr, augment) in list(DISTILLATIONS.items())[1:]:  # the strong washes
        models[f"clone {name}"] = distil(clone, thief_images, splits, seed, lr, augment)
    for path in sorted(args.grid.glob("jobs/attack-*/result.json")):
        r = json.loads(path.read_text())
        if r["victim"].endswith(args.victim.name) and not r["defenses"]:
            name = f"innocent: undefended clone ({r['pool']}, {r['labels']})"
            models[name] = load_surrogate("cnn", path.parent, splits)
    for name, model in models.items():
        answers = predict_proba(model, fresh)
        p, groups = rule_p_value(answers, natural, fresh_slab, mark.pi)
        accuracy = (predict_proba(model, test.images).argmax(-1) == test.labels).float().mean()
        agree = (answers.argmax(-1) == mark.pi[fresh_slab, natural.argmax(-1)]).float().mean()
        print(f"| {name} | {100 * accuracy:.1f} | {agree:.3f} | {p:.1e} | {groups} |", flush=True)


if __name__ == "__main__":
    main()
