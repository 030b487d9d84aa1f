"""A watermark secret chosen for its benign cost (defenses/watermark_key.py, `divqat secret`)."""

import random

import pytest
import torch

from divqat.defenses import create_defense
from divqat.defenses.watermark_key import benign_cost, choose_secret
from divqat.errors import DivqatError

RATE = 0.1


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(n, 1, 7, 7, generator=g), size=28, mode="bilinear")
    return coarse.clamp(0, 1)


def victim(x):
    return torch.softmax(x.flatten(1)[:, :10] * 20, -1)


def test_the_benign_cost_is_what_the_watermark_changes_on_right_answers(tmp_path):
    x = images(600)
    probs = victim(x)
    labels = probs.argmax(-1).clone()
    labels[::3] = (labels[::3] + 1) % 10  # a third answered wrong: changing those costs nothing
    secret = bytes(range(32))
    (tmp_path / "s.key").write_bytes(secret)
    served = create_defense("watermark", {"rate": RATE, "secret_file": str(tmp_path / "s.key")})(probs, x)
    changed = served.argmax(-1) != probs.argmax(-1)
    right = probs.argmax(-1) == labels
    assert changed.sum() > 20
    assert benign_cost(secret, RATE, probs, x, labels) == pytest.approx(float((changed & right).float().mean()))


def test_the_chosen_secret_costs_at_most_rate_times_accuracy_and_a_hopeless_search_says_so():
    x = images(400, seed=1)
    probs = victim(x)
    labels = probs.argmax(-1)
    draw = random.Random(0).randbytes
    secret, cost, tried = choose_secret(RATE, probs, x, labels, draw=draw)
    assert cost == benign_cost(secret, RATE, probs, x, labels) <= RATE and tried >= 1
    costly = max((draw(32) for _ in range(30)), key=lambda s: benign_cost(s, RATE, probs, x, labels))
    assert benign_cost(costly, RATE, probs, x, labels) > RATE
    with pytest.raises(DivqatError, match="no secret of 3 costs at most"):
        choose_secret(RATE, probs, x, labels, attempts=3, draw=lambda n: costly)
