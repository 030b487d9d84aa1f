"""The thief sees only answers: an attack holds an oracle (`query`, `remaining`) and unlabelled
images, and a plugin attack that tries to reach around the budget, the defenses or the labels fails."""

import pytest
import torch

from divqat.attacks import ATTACKS, register_attack
from divqat.blackbox import BudgetExceeded
from divqat.configs import AttackConfig
from divqat.defenses import create_defense
from divqat.extraction import steal


@pytest.fixture
def nosy_attack():
    seen = {}

    @register_attack("nosy")
    def nosy(victim, thief):
        seen["victim attributes"] = sorted(a for a in dir(victim) if not a.startswith("__"))
        for name in ("backend", "_backend", "budget", "_budget", "defenses", "_defenses", "queries", "books"):
            seen[f"has {name}"] = hasattr(victim, name)
        for name, value in (("remaining", 10**9), ("budget", 10**9), ("backend", None)):
            try:
                setattr(victim, name, value)
                seen[f"set {name}"] = True
            except AttributeError:
                seen[f"set {name}"] = False
        seen["vars"] = hasattr(victim, "__dict__")
        seen["pool"] = thief.pool
        seen["thief fields"] = sorted(vars(thief))
        with pytest.raises(BudgetExceeded):
            victim.query(thief.pool[: victim.remaining + 1])  # a batch past the budget is refused whole
        seen["answers"] = victim.query(thief.pool[:16])
        seen["remaining"] = victim.remaining
        return thief.train_surrogate(thief.pool[:16], seen["answers"], epochs=1)

    yield seen
    ATTACKS.pop("nosy")


def test_a_plugin_attack_cannot_reach_around_the_budget_the_defenses_or_the_labels(nosy_attack, tiny_splits):
    def backend(images):
        return torch.softmax(images.flatten(1)[:, :10] * 5, -1)

    config = AttackConfig(attack="nosy", pool="in", budget=40, epochs=1)
    _, result = steal(backend, tiny_splits, config, defenses=(create_defense("label-only"),))
    seen = nosy_attack
    assert seen["victim attributes"] == ["query", "remaining"]
    assert not any(v for k, v in seen.items() if k.startswith(("has ", "set ")))
    assert seen["vars"] is False  # no instance dictionary to rummage in
    assert isinstance(seen["pool"], torch.Tensor)  # images, not an ImageSet with its true labels
    assert torch.equal(seen["pool"], tiny_splits.thief_pool.images)
    assert "labels" not in " ".join(seen["thief fields"]) and "splits" not in seen["thief fields"]
    answers = seen["answers"]
    assert torch.equal(answers, torch.nn.functional.one_hot(answers.argmax(-1), 10).float())  # the defense held
    assert seen["remaining"] == 40 - 16 and result["queries"] == 16
