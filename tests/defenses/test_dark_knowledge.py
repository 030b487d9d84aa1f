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


def test_scramble_per_class_relabels_every_image_of_a_class_the_same_way(secret):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 10, generator=g), -1)
    images = torch.rand(500, 1, 28, 28, generator=g)
    scramble = create_defense("scramble", {"secret_file": secret, "per": "class"})
    out = scramble(probs, images)
    assert torch.equal(out.max(-1).values, probs.max(-1).values) and torch.equal(out.argmax(-1), probs.argmax(-1))
    top = probs.argmax(-1)
    for c in range(10):
        rows = (top == c).nonzero().squeeze(1)
        # the class whose probability each class is told, read off the first image: the same for all
        source = (out[rows[0]][:, None] == probs[rows[0]][None]).float().argmax(1)
        assert (
            source[c] == c and sorted(source.tolist()) == list(range(10)) and not torch.equal(source, torch.arange(10))
        )
        assert torch.equal(out[rows], probs[rows][:, source])
    other = create_defense("scramble", {"secret_file": secret, "per": "class"})
    assert torch.equal(other(probs, torch.rand(500, 1, 28, 28)), out)  # the image's code plays no part
    with pytest.raises(DivqatError, match="per must be 'image' or 'class'"):
        create_defense("scramble", {"secret_file": secret, "per": "row"})
    with pytest.raises(DivqatError, match="keep 1"):
        create_defense("scramble", {"secret_file": secret, "per": "class", "keep": 2})


def test_confidence_step_by_hand():
    flatten = create_defense("flatten", {"keep": 10, "confidence_step": 2})  # keep all: only the rounding
    out = flatten(torch.tensor([[0.6, 0.3, 0.1], [0.55, 0.45, 0.0], [1.0, 0.0, 0.0], [0.0, 0.02, 0.98]]), None)
    # log-odds 0.405 rounds to 0: the top told 0.5, the rest rescaled; 0.55 would tie 0.45 at 0.5:
    # kept exact; a certain answer kept; log-odds 3.89 rounds to 4: 0.9820, the 0.02 rescaled.
    told = torch.sigmoid(torch.tensor(4.0)).item()
    expected = torch.tensor([[0.5, 0.375, 0.125], [0.55, 0.45, 0.0], [1.0, 0.0, 0.0], [0.0, 1 - told, told]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_confidence_step_keeps_the_top1_and_tells_levels(secret):
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(4 * torch.randn(2000, 10, generator=g), -1)
    images = torch.rand(2000, 1, 28, 28, generator=g)
    for defense in (create_defense("flatten", {"confidence_step": 2}),
                    create_defense("scramble", {"secret_file": secret, "confidence_step": 2})):  # fmt: skip
        out = defense(probs, images)
        assert torch.equal(out.argmax(-1), probs.argmax(-1))
        assert torch.allclose(out.sum(-1), torch.ones(2000), atol=1e-5)
        top = out.max(-1).values.double()
        levels = torch.log(top) - torch.log1p(-top)
        rounded = (levels / 2 - torch.round(levels / 2)).abs() < 1e-3
        exact = top == probs.max(-1).values.double()
        shown = top < 0.99  # float32 tells levels apart below that
        assert (rounded | exact)[shown].all() and rounded[shown].float().mean() > 0.9  # but where a tie was near
    scrambled = create_defense("scramble", {"secret_file": secret, "confidence_step": 2})(probs, images)
    flat = create_defense("flatten", {"confidence_step": 2})(probs, images)
    assert torch.equal(scrambled.max(-1).values, flat.max(-1).values)  # the same top, told the same
    with pytest.raises(DivqatError, match="confidence_step must be in"):
        create_defense("flatten", {"confidence_step": -1})
