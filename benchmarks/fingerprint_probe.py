"""Does the victim's own decision boundary survive a clone distilled again? A probe of conferrable
adversarial examples (Lukas et al., ICLR 2021) as a fingerprint beside the watermark - not a
registered defense, nothing served (docs/divqat.md, "A fingerprint the victim carries").

    python benchmarks/fingerprint_probe.py --victim runs/order/jobs/victim-fa62347171975435 \
        --clones runs/proof_many/jobs/victim-fa62347171975435-*

The owner, with its own images only (the victim's training split, never a thief's pool or the
test set): two surrogates of its victim (cnn and LeNet-5 on the victim's top-1 answers to 10,000
of its images, augmented, as a thief would train them) and two references (the same on the true
labels of 10,000 others). From 1,000 further images, each with a wrong target class drawn with a
seed, targeted PGD (L-inf `--eps`) on the victim's QAT graph (fake-quantized, straight-through)
and the surrogates towards the target, and away from it on the references; kept (the
fingerprint): the examples the int8 victim and both surrogates answer with the target and neither
reference does. Each suspect's rate - the fraction of the fingerprint it answers with the target -
for the clones of `--clones` (proof_stacked.py's jobs), each distilled again into LeNet-5 on random
views at learning rate 1e-2 (watermark_eval.distil: the thief the watermark does not prove), the
grid's undefended twins, and innocents: LeNet-5, cnn and ResNet-8 trained on the true labels
(watermark_eval.trained_innocents, seeds 100+, none of them a reference).

Measured on QAT seed 0 (the command above, 26 min on 2 threads): 23 conferrable examples of
1,000 (the victim alone answers 364 with the target); answered with the target by the whole
split's clones on 13 % and 13 %, their students on 13 % and 26 %, the undefended twin on 4 %,
the eight innocents on 4-30 %: no separation. Not pursued.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from watermark_eval import distil, load_surrogate, trained_innocents

from divqat import artifacts
from divqat.configs import AttackConfig
from divqat.data import load_splits
from divqat.data.augment import random_affine
from divqat.extraction import thief_pool
from divqat.models import create_model
from divqat.quant import QuantConfig, prepare
from divqat.quant.pt2e import set_mode
from divqat.train.loop import TrainConfig, fit, predict_proba
from divqat.train.losses import cross_entropy

ATTACK_FIELDS = ("attack", "budget", "surrogate", "epochs", "schedule", "pool", "in_seeds", "confidence_tau", "labels",
                 "seed")  # fmt: skip


def qat_graph(run: Path) -> torch.nn.Module:
    """The victim's QAT graph before conversion (fake-quantized: gradients pass straight through)."""
    config, meta = artifacts.load_config(run)
    qconfig = QuantConfig(config.weight_bits, meta["activation_bits"])
    prepared = prepare(artifacts.fresh_model(config, meta), tuple(meta["input_shape"]), qconfig, qat=True)
    return set_mode(artifacts.load_state(prepared, run / artifacts.QUANT), train=False)


def trained(arch: str, images, labels, splits, seed: int) -> torch.nn.Module:
    """A model of the owner's: 10 epochs, a random view of each image per epoch (a thief's recipe)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model(arch, num_classes=splits.num_classes, input_shape=splits.input_shape)
    views = torch.Generator().manual_seed(seed + 1)
    fit(model, {"inputs": images, "targets": labels}, cross_entropy, TrainConfig(10, 128, 1e-3, seed=seed),
        transform=lambda x: random_affine(x, views))  # fmt: skip
    return model.eval()


def craft(x, target, towards, away, eps: float, steps: int = 40) -> torch.Tensor:
    """Targeted PGD: the target's cross-entropy down on `towards`, up (capped) on `away`."""
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        adv = (x + delta).clamp(0, 1)
        loss = sum(F.cross_entropy(m(adv), target) for m in towards) / len(towards)
        loss = loss - sum(F.cross_entropy(m(adv), target).clamp(max=5.0) for m in away) / len(away)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= eps / 10 * grad.sign()
            delta.clamp_(-eps, eps)
    return (x + delta.detach()).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victim", type=Path, required=True)
    parser.add_argument("--clones", type=Path, nargs="+", default=[])
    parser.add_argument("--grid", type=Path, default=Path("runs/order"), help="its undefended twins")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    splits = load_splits("fashion-mnist")
    own = splits.victim_train
    victim = artifacts.load_onnx(args.victim)
    graph = qat_graph(args.victim)

    def top1(model, x):
        return (victim.predict_proba(x) if model is victim else predict_proba(model, x)).argmax(-1)

    part = own.images[20_000:30_000]
    labels = top1(victim, part)
    surrogates = [trained(a, part, labels, splits, 500 + i) for i, a in enumerate(("cnn", "lenet5"))]
    references = [trained(a, own.images[30_000:40_000], own.labels[30_000:40_000], splits, 600 + i)
                  for i, a in enumerate(("cnn", "lenet5"))]  # fmt: skip
    x = own.images[: args.candidates]
    g = torch.Generator().manual_seed(args.seed)
    target = (top1(victim, x) + 1 + torch.randint(0, splits.num_classes - 1, (len(x),), generator=g)) % 10
    for m in (graph, *surrogates, *references):
        m.requires_grad_(False)
    adv = torch.cat([craft(a, t, [graph, *surrogates], references, args.eps)
                     for a, t in zip(x.split(250), target.split(250), strict=True)])  # fmt: skip
    hit = top1(victim, adv) == target
    print(f"eps {args.eps}: the int8 victim answers the target on {int(hit.sum())} of {len(x)}")
    for m in surrogates:
        hit &= top1(m, adv) == target
    for m in references:
        hit &= top1(m, adv) != target
    keep = hit.nonzero().squeeze(1)
    fingerprint, aims = adv[keep], target[keep]
    print(f"fingerprint: {len(keep)} conferrable examples ({time.perf_counter() - start:.0f} s)")

    def rate(model) -> float:
        return float((top1(model, fingerprint) == aims).float().mean())

    rows = []
    for job in args.clones:
        result = json.loads((job / "result.json").read_text())
        config = AttackConfig(**{k: result[k] for k in ATTACK_FIELDS})
        clone = load_surrogate(config.surrogate, job, splits)
        student = distil(clone, thief_pool(config, splits), splits, config.seed, 1e-2, True)
        accuracy = float((top1(student, splits.test.images) == splits.test.labels).float().mean())
        name = job.name.split("-", 2)[2]
        rows.append((f"clone {name}", 100 * result["surrogate_accuracy"], rate(clone)))
        rows.append((f"clone {name}, distilled again (augmented, lr 1e-2)", 100 * accuracy, rate(student)))
    for path in sorted(args.grid.glob("jobs/attack-*/result.json")):
        r = json.loads(path.read_text())
        if Path(r["victim"]).name == args.victim.name and not r["defenses"]:
            twin = load_surrogate(r["surrogate"], path.parent, splits)
            rows.append((f"undefended twin ({r['pool']} + {r['in_seeds']}, {r['labels']})",
                         100 * r["surrogate_accuracy"], rate(twin)))  # fmt: skip
    counts = (("lenet5", 3), ("cnn", 3), ("resnet8", 2))
    for name, answer in trained_innocents(splits, [0, 1, 2], counts, Path("runs/innocents-trained")).items():
        accuracy = float((answer(splits.test.images).argmax(-1) == splits.test.labels).float().mean())
        hits = float((answer(fingerprint).argmax(-1) == aims).float().mean())
        rows.append((f"innocent: {name}", 100 * accuracy, hits))
    print("| suspect | test acc % | fingerprint answered with its target |")
    print("| --- | --- | --- |")
    for name, accuracy, r in rows:
        print(f"| {name} | {accuracy:.1f} | {100 * r:.1f} % |")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
