"""flatten and scramble: the top-1 and its probability exact (accuracy and calibration kept),
the ranking of the other classes gone; scramble the same for the same picture."""

import pytest
import torch

from divqat import metrics
from divqat.defenses import create_defense
from divqat.errors import DivqatError


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "s.key"
    path.write_bytes(bytes(range(32)))
    return str(path)


def test_flatten_by_hand():
    probs = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    expected = torch.tensor([[0.6, 0.4 / 3, 0.4 / 3, 0.4 / 3], [0.2, 0.2, 0.2, 0.4]])
    assert torch.allclose(create_defense("flatten")(probs, None), expected)
    two = create_defense("flatten", {"keep": 2})(probs, None)
    assert torch.allclose(two, torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.15, 0.15, 0.3, 0.4]]))


def test_scramble_keeps_the_top_and_its_probability_and_permutes_the_rest(secret):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 10, generator=g), -1)
    images = torch.rand(500, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (500,), generator=g)
    scramble = create_defense("scramble", {"secret_file": secret})
    out = scramble(probs, images)
    assert torch.equal(out.max(-1).values, probs.max(-1).values) and torch.equal(out.argmax(-1), probs.argmax(-1))
    assert torch.equal(out.sort(-1).values, probs.sort(-1).values)  # the same numbers, other places
    assert metrics.expected_calibration_error(out, labels) == metrics.expected_calibration_error(probs, labels)
    second = (probs.topk(2, -1).indices[:, 1] == out.topk(2, -1).indices[:, 1]).float().mean()
    assert second < 0.25  # the runner-up is the victim's about 1 time in 9, by chance
    # The same picture, asked again by a fresh instance with the same secret: the same answer.
    assert torch.equal(create_defense("scramble", {"secret_file": secret})(probs, images), out)
    with pytest.raises(DivqatError, match="defense 'scramble' needs a secret"):
        create_defense("scramble")
