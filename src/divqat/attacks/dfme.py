"""Data-free model extraction (Truong et al., CVPR 2021), scaled to a CPU budget.

A generator proposes images that maximise the disagreement (L1 on logits) between the
surrogate and the victim; the victim's gradient is estimated by forward differences along
random directions (zeroth order), since only its outputs are available. The victim's logits
are approximated by its centred log-probabilities. Each generator step costs
batch * (directions + 1) queries, each surrogate step `batch` queries.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from divqat.attacks.base import Attack, Thief, positive, register_attack
from divqat.blackbox.victim import Oracle
from divqat.train.loop import set_mode


class Generator(nn.Module):
    def __init__(self, latent: int, shape: tuple[int, int, int]):
        super().__init__()
        channels, size, _ = shape
        self.base = size // 4
        self.net = nn.Sequential(
            nn.Linear(latent, 64 * self.base * self.base),
            nn.Unflatten(1, (64, self.base, self.base)),
            nn.BatchNorm2d(64),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(64, channels, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


def victim_logits(victim: Oracle, x: torch.Tensor) -> torch.Tensor:
    log_p = victim.query(x).clamp_min(1e-8).log()
    return log_p - log_p.mean(-1, keepdim=True)


@register_attack("dfme")
@dataclass(frozen=True)
class DFME(Attack):
    """`batch` images a step, `directions` random directions per gradient estimate of step
    `probe_step`, `student_steps` surrogate steps per generator step, a `latent`-dimensional
    generator trained at `generator_lr` (the surrogate at the config's lr)."""

    batch: int = 64
    directions: int = 1
    probe_step: float = 1e-3
    student_steps: int = 5
    latent: int = 64
    generator_lr: float = 1e-3

    def __post_init__(self):
        positive(self, "batch", "directions", "probe_step", "student_steps", "latent", "generator_lr")

    def steal(self, victim: Oracle, thief: Thief):
        batch, directions, probe_step, latent = self.batch, self.directions, self.probe_step, self.latent
        student_steps = self.student_steps
        g, c = thief.generator, thief.config
        torch.manual_seed(c.seed)
        generator = Generator(latent, thief.input_shape)
        surrogate = thief.new_surrogate(torch.rand(256, *thief.input_shape, generator=g))
        gen_opt = torch.optim.Adam(generator.parameters(), lr=self.generator_lr)
        sur_opt = torch.optim.Adam(surrogate.parameters(), lr=c.lr)
        inputs, answers = [], []
        per_round = batch * (directions + 1) + student_steps * batch
        while victim.remaining >= per_round:
            # Generator: ascend the disagreement, with the victim's part estimated by forward differences.
            set_mode(surrogate, train=False)
            x = generator(torch.randn(batch, latent, generator=g))
            xd = x.detach()
            u = torch.randn(directions, *xd.shape, generator=g)
            u = u / u.flatten(2).norm(dim=-1).view(directions, batch, 1, 1, 1)
            with torch.no_grad():
                probes = torch.cat([xd, (xd.unsqueeze(0) + probe_step * u).reshape(-1, *xd.shape[1:])])
                disagreement = (surrogate(probes) - victim_logits(victim, probes)).abs().mean(-1)
                base, moved = disagreement[:batch], disagreement[batch:].view(directions, batch)
                dim = xd[0].numel()
                grad = (dim / (directions * probe_step)) * ((moved - base).view(directions, batch, 1, 1, 1) * u).sum(0)
            gen_opt.zero_grad()
            x.backward(-grad / batch)  # maximise the disagreement
            gen_opt.step()
            # Surrogate: descend the disagreement on fresh samples.
            set_mode(surrogate, train=True)
            for _ in range(student_steps):
                with torch.no_grad():
                    xs = generator(torch.randn(batch, latent, generator=g))
                probs = victim.query(xs)
                logits = probs.clamp_min(1e-8).log()
                target = logits - logits.mean(-1, keepdim=True)
                out = surrogate(xs)
                loss = F.cross_entropy(out, probs.argmax(-1)) if c.labels == "hard" else F.l1_loss(out, target)
                sur_opt.zero_grad()
                loss.backward()
                sur_opt.step()
                inputs.append(xs)
                answers.append(probs)
        # Finish like the other attacks: train on everything queried.
        epochs = max(1, c.epochs // 4)
        return thief.train_surrogate(torch.cat(inputs), torch.cat(answers), model=surrogate, epochs=epochs)
