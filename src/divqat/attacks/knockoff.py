"""KnockoffNets (Orekondy et al., CVPR 2019): query a natural-image pool, train on the answers.

`knockoff` samples the pool uniformly (augmenting once it is used up). `knockoff-adaptive` runs
the paper's gradient bandit over clusters of the pool: each round it draws a cluster from a
softmax policy, queries a batch from it, and rewards the cluster by certainty (top-1 minus
top-2 probability), diversity (how far the answers are from the running mean answer) and the
online surrogate's loss on the answers; each reward is standardised by its running statistics.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from divqat.attacks.base import Attack, Thief, positive, register_attack
from divqat.blackbox.victim import Oracle
from divqat.data.augment import random_affine, sample_with_augmentation
from divqat.train.loop import set_mode


@register_attack("knockoff")
@dataclass(frozen=True)
class KnockoffRandom(Attack):
    """KnockoffNets with random sampling: the budget's worth of pool images, asked once each."""

    def steal(self, victim: Oracle, thief: Thief):
        inputs = sample_with_augmentation(thief.pool, thief.config.budget // thief.queries_per_image, thief.generator)
        return thief.train_surrogate(inputs, thief.query(victim, inputs))


def cluster_pool(images: torch.Tensor, clusters: int, seed: int) -> list[torch.Tensor]:
    """k-means on 7x7 thumbnails: the bandit's arms, needing no labels of the pool."""
    thumbs = F.adaptive_avg_pool2d(images, 7).flatten(1).numpy()
    assign = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit_predict(thumbs)
    groups = [torch.from_numpy((assign == c).nonzero()[0]) for c in range(clusters)]
    return [g for g in groups if len(g)]


class ArmQueue:
    """A cluster's images in random order, each drawn once per pass (never twice in a pass)."""

    def __init__(self, members: torch.Tensor, generator: torch.Generator):
        self.members, self.generator, self.passes = members, generator, 0
        self.order = members[torch.randperm(len(members), generator=generator)]

    def take(self, n: int) -> tuple[torch.Tensor, bool]:
        if len(self.order) == 0:
            self.passes += 1
            self.order = self.members[torch.randperm(len(self.members), generator=self.generator)]
        pick, self.order = self.order[:n], self.order[n:]
        return pick, self.passes == 0


class Standardizer:
    """Running mean and variance (Welford), to put the three rewards on one scale."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def __call__(self, value: float) -> float:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)
        std = (self.m2 / self.n) ** 0.5 if self.n > 1 else 1.0
        return (value - self.mean) / (std + 1e-8)


@register_attack("knockoff-adaptive")
@dataclass(frozen=True)
class KnockoffAdaptive(Attack):
    """KnockoffNets' adaptive strategy: a gradient bandit over `clusters` k-means clusters of the
    pool, `round_size` queries a round, policy step `step`."""

    clusters: int = 20
    round_size: int = 64
    step: float = 0.5

    def __post_init__(self):
        positive(self, "clusters", "round_size", "step")

    def steal(self, victim: Oracle, thief: Thief):
        pool, g = thief.pool, thief.generator
        arms = cluster_pool(pool, min(self.clusters, len(pool)), thief.config.seed)
        preferences = torch.zeros(len(arms))
        baseline, rounds = 0.0, 0
        scale = {"certainty": Standardizer(), "diversity": Standardizer(), "loss": Standardizer()}
        surrogate = thief.new_surrogate(pool[torch.randperm(len(pool), generator=g)[:1024]])
        optimizer = torch.optim.Adam(surrogate.parameters(), lr=thief.config.lr)
        queues = [ArmQueue(members, g) for members in arms]
        inputs, answers, mean_answer = [], [], None
        while victim.remaining > 0:
            policy = torch.softmax(preferences, 0)
            arm = int(torch.multinomial(policy, 1, generator=g))
            pick, fresh = queues[arm].take(min(self.round_size, victim.remaining))
            x = pool[pick] if fresh else random_affine(pool[pick], g)  # used-up cluster: new views
            y = victim.query(x)
            inputs.append(x)
            answers.append(y)

            top2 = y.topk(2, -1).values
            certainty = (top2[:, 0] - top2[:, 1]).mean().item()
            mean_answer = y.mean(0) if mean_answer is None else 0.9 * mean_answer + 0.1 * y.mean(0)
            diversity = (y - mean_answer).clamp_min(0).sum(-1).mean().item()
            set_mode(surrogate, train=True)
            loss = F.cross_entropy(surrogate(x), thief.targets(y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            reward = sum(
                scale[k](v) for k, v in (("certainty", certainty), ("diversity", diversity), ("loss", loss.item()))
            )

            rounds += 1
            baseline += (reward - baseline) / rounds
            onehot = F.one_hot(torch.tensor(arm), len(arms)).float()
            preferences += self.step * (reward - baseline) * (onehot - policy)
        return thief.train_surrogate(torch.cat(inputs), torch.cat(answers))
