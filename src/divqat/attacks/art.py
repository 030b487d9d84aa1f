"""ART's extraction attacks as divqat attacks: `art-knockoff` (KnockoffNets, random sampling;
soft or, with labels: hard, top-1 answers) and `art-copycat` (CopycatCNN: top-1 answers), run
with ART 1.20's own code against divqat's oracle, training a divqat surrogate through ART's
PyTorchClassifier. ART draws its queries without replacement, so a pool smaller than the budget
is first grown with augmented copies, as divqat's `knockoff` does."""

from dataclasses import dataclass

import torch

from divqat.attacks.base import Attack, Thief, register_attack
from divqat.blackbox.victim import Oracle
from divqat.data.augment import sample_with_augmentation
from divqat.interop.art import black_box, thieved_classifier


def art_extract(victim: Oracle, thief: Thief, attack_name: str, **options):
    """ART's attack `attack_name` (of art.attacks.extraction) with the thief's recipe and `options`."""
    from art.attacks import extraction

    c = thief.config
    torch.manual_seed(c.seed)
    inputs = sample_with_augmentation(thief.pool, c.budget, thief.generator)
    surrogate = thief.new_surrogate(inputs)
    stolen = thieved_classifier(surrogate, thief.input_shape, thief.num_classes, c.lr)
    box = black_box(victim.query, thief.input_shape, thief.num_classes)
    attack = getattr(extraction, attack_name)(box, batch_size_fit=c.batch_size, batch_size_query=512,
                                              nb_epochs=c.epochs, nb_stolen=c.budget, **options)  # fmt: skip
    attack.extract(inputs.numpy(), thieved_classifier=stolen)
    return surrogate.eval()


@register_attack("art-knockoff")
@dataclass(frozen=True)
class ArtKnockoff(Attack):
    def steal(self, victim: Oracle, thief: Thief):
        soft = thief.config.labels == "soft"
        return art_extract(victim, thief, "KnockoffNets", sampling_strategy="random", use_probability=soft,
                           verbose=False)  # fmt: skip


@register_attack("art-copycat")
@dataclass(frozen=True)
class ArtCopycat(Attack):
    def steal(self, victim: Oracle, thief: Thief):
        return art_extract(victim, thief, "CopycatCNN", use_probability=False)
