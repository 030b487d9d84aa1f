import pytest
import torch

from divqat.blackbox import BlackBoxVictim, BudgetExceeded
from divqat.defenses import create_defense
from divqat.errors import DivqatError


def constant_backend(images):
    return torch.softmax(torch.arange(10.0).repeat(len(images), 1) / 3, -1)


def test_query_past_the_budget_is_refused():
    victim = BlackBoxVictim(constant_backend, budget=5)
    victim.query(torch.rand(3, 1, 28, 28))
    victim.query(torch.rand(2, 1, 28, 28))
    assert victim.queries == 5 and victim.remaining == 0
    with pytest.raises(BudgetExceeded, match="budget exhausted: 1 more queries asked, 0 of 5 left"):
        victim.query(torch.rand(1, 1, 28, 28))
    assert victim.queries == 5


def test_a_batch_crossing_the_budget_is_refused_whole():
    victim = BlackBoxVictim(constant_backend, budget=4)
    with pytest.raises(BudgetExceeded):
        victim.query(torch.rand(5, 1, 28, 28))
    assert victim.queries == 0


@pytest.mark.parametrize("budget", [0, -3])
def test_budget_must_be_positive(budget):
    with pytest.raises(DivqatError, match="positive"):
        BlackBoxVictim(constant_backend, budget=budget)


def test_output_modes():
    x = torch.rand(4, 1, 28, 28)
    full = BlackBoxVictim(constant_backend, 100).query(x)
    top2 = BlackBoxVictim(constant_backend, 100, [create_defense("top-k", {"k": "2"})]).query(x)
    rounded = BlackBoxVictim(constant_backend, 100, [create_defense("rounding", {"decimals": 1})]).query(x)
    labels = BlackBoxVictim(constant_backend, 100, [create_defense("label-only")]).query(x)
    assert torch.allclose(full, constant_backend(x))
    assert ((top2 > 0).sum(-1) == 2).all() and torch.allclose(top2.sum(-1), torch.ones(4))
    assert torch.allclose(rounded * 10, (rounded * 10).round(), atol=1e-6 * 10)
    assert (labels.sum(-1) == 1).all() and (labels.argmax(-1) == 9).all() and set(labels.unique().tolist()) == {0, 1}
