import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from divqat.defenses import DEFENSES, create_defense
from divqat.errors import DivqatError

rows = st.lists(st.lists(st.floats(-20, 20), min_size=5, max_size=5), min_size=1, max_size=8)


@settings(max_examples=100, deadline=None)
@given(logits=rows, name=st.sampled_from(["top-k", "rounding", "label-only"]))
def test_valid_distributions_and_argmax_kept(logits, name):
    probs = torch.softmax(torch.tensor(logits), -1)
    out = create_defense(name)(probs, torch.zeros(len(probs), 1, 2, 2))
    assert (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(len(out)), atol=1e-5)
    assert DEFENSES[name].keeps_argmax
    # Where the top-1 is unique, the defense returns the same class.
    top2 = probs.topk(2, -1).values
    unique = top2[:, 0] - top2[:, 1] > 1e-6
    assert (out.argmax(-1)[unique] == probs.argmax(-1)[unique]).all()


@settings(max_examples=100, deadline=None)
@given(logits=rows, decimals=st.integers(0, 10))
@example(logits=[[0.0] * 9 + [0.03125]], decimals=2)  # 0.1028 and 0.0997 both round to 0.10
@example(logits=[[0.0] * 4 + [3e-7]], decimals=10)  # a top-1 ahead by one float32 step
def test_rounding_keeps_every_unique_argmax(logits, decimals):
    probs = torch.softmax(torch.tensor(logits), -1)
    out = create_defense("rounding", {"decimals": decimals})(probs, None)
    top2 = probs.topk(2, -1).values
    unique = top2[:, 0] > top2[:, 1]
    assert (out.argmax(-1)[unique] == probs.argmax(-1)[unique]).all()
    assert torch.allclose(out.sum(-1), torch.ones(len(out)), atol=1e-5)


def test_rounding_breaks_the_tie_it_creates():
    probs = torch.softmax(torch.tensor([[0.0] * 9 + [0.03125]]), -1)  # 0.0997 x 9 and 0.1028
    assert create_defense("rounding", {"decimals": 2})(probs, None).argmax().item() == 9


def test_label_only_is_per_row():
    """The known defect: setting the winning columns of every row in the batch."""
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    out = create_defense("label-only")(probs, torch.zeros(3, 1, 2, 2))
    assert out.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_rounding_to_zero_decimals_keeps_a_class():
    probs = torch.tensor([[0.4, 0.35, 0.25]])
    out = create_defense("rounding", {"decimals": 0})(probs, torch.zeros(1, 1, 2, 2))
    assert out.argmax().item() == 0 and out.sum().item() == pytest.approx(1.0)


def test_top_k_with_k_at_least_classes_is_identity():
    probs = torch.softmax(torch.randn(6, 4), -1)
    assert torch.allclose(create_defense("top-k", {"k": 4})(probs, None), probs)


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("blur", {}, "unknown defense"),
        ("top-k", {"kk": "1"}, "no parameter 'kk'"),
        ("top-k", {"k": "0"}, "k must be in"),
        ("rounding", {"decimals": "two"}, "is not an int"),
    ],
)
def test_bad_defense_inputs(name, params, match):
    with pytest.raises(DivqatError, match=match):
        create_defense(name, params)
