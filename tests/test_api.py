"""The Python API: your own nn.Module and tensors through the whole pipeline, no CLI."""

import json

import pytest
import torch
from torch import nn

from divqat import api
from divqat.errors import DivqatError


class SmallNet(nn.Module):
    """A user's own network: takes [0, 1] pixels, normalises inside."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                                  nn.Linear(8 * 7 * 7, 10))  # fmt: skip

    def forward(self, x):
        return self.body((x - 0.5) / 0.25)


@pytest.fixture(scope="module")
def data(tiny_splits):
    train, test = tiny_splits.victim_train, tiny_splits.test
    return api.dataset(train.images, train.labels, test.images, test.labels)


def test_train_attack_and_defend_your_own_model(data, tmp_path):
    torch.manual_seed(0)  # the user's model is initialised by the user, before divqat seeds anything
    victim = api.train_victim(SmallNet(), data, tmp_path / "victim", method="divqat", alpha=0.0, beta=0.3,
                              outlier_loss="shift", distill=0.0, fp_epochs=2, epochs=1, batch_size=64,
                              lr=1e-3)  # fmt: skip
    metrics = json.loads((victim / "metrics.json").read_text())
    assert metrics["model"] == "SmallNet" and metrics["beta"] == 0.3 and metrics["int8_accuracy"] > 0.5
    result, surrogate = api.steal(victim, data, pool="in", budget=200, epochs=20)  # the whole thief split
    assert result["queries"] == 200 and result["surrogate_accuracy"] > 0.2  # chance is 0.1
    guarded, _ = api.steal(victim, data, pool=data.thief_pool.images, budget=300, epochs=1,
                           defenses=[api.defense("reverse-sigmoid", beta=0.5)])  # fmt: skip
    assert guarded["pool"] == "custom" and guarded["defense_l1"] > 0
    assert isinstance(surrogate, nn.Module)
    check_every_form_of_a_victim(victim, data)


def check_every_form_of_a_victim(victim, data):
    """A Victim object (predict_proba, onnx, metrics), reloaded by `api.load`, and stolen in
    every form steal accepts: the object, its ONNX file alone, a plain callable."""
    from divqat.quant import OnnxModel

    assert isinstance(victim, api.Victim) and api.load(victim).run_dir == victim.run_dir
    images = data.test.images[:16]
    expected = OnnxModel(victim.onnx).predict_proba(images)
    assert torch.equal(victim.predict_proba(images), expected) and torch.equal(api.load(victim)(images), expected)
    assert victim.metrics["model"] == "SmallNet" and victim.config["victim"]["model"] == "SmallNet"
    asked = []

    def callable_victim(batch):
        asked.append(len(batch))
        return victim.predict_proba(batch)

    for form in (victim, victim.onnx, callable_victim):
        result, _ = api.steal(form, data, pool="in", budget=64, epochs=1)
        assert result["queries"] == 64
    # steal measures too: the callable answered the thief's 64 queries and the test set.
    assert sum(asked) == 64 + len(data.test) and result["victim"] == "function"
    asked.clear()
    thief = api.attack("knockoff", budget=64, epochs=1)
    clone = thief.extract(callable_victim, data.thief_pool.images, num_classes=10)
    assert sum(asked) == 64 and thief.books["queries"] == 64  # the theft alone: no test image asked
    assert set(api.evaluate(clone, data)) == {"surrogate_accuracy"}  # no victim: the clone alone
    scores = api.evaluate(clone, (data.test.images, data.test.labels), victim=victim)
    from divqat.train import predict_proba

    agree = predict_proba(clone, data.test.images).argmax(-1) == victim(data.test.images).argmax(-1)
    assert scores["fidelity"] == pytest.approx(agree.float().mean().item())
    with pytest.raises(DivqatError, match="num_classes"):
        thief.extract(callable_victim, data.thief_pool.images)
    assert isinstance(api.attack(budget=16, epochs=1).extract(victim, data.thief_pool.images), nn.Module)
    with pytest.raises(DivqatError, match="a victim is"):
        api.steal(42, data, budget=1)
    assert victim.app(victim / "serve.db").title == "divqat victim"
    key = "a-key-of-at-least-32-characters-here"
    with victim.serve(victim.run_dir.parent / "served.db", port=0, background=True, keys={key: 100}) as served:
        remote = api.remote(served.url, key)  # the served victim, its budget counted by the server
        assert torch.equal(remote(images), expected) and remote.remaining == 100 - len(images)


def test_bad_inputs_are_divqat_errors(data, tmp_path):
    with pytest.raises(DivqatError, match="in \\[0, 1\\]"):
        api.dataset(torch.full((10, 1, 28, 28), 255.0), torch.zeros(10), torch.zeros(2, 1, 28, 28), torch.zeros(2))
    with pytest.raises(DivqatError, match="unknown defense"):
        api.defense("blur")
    with pytest.raises(DivqatError, match="not a divqat run directory"):
        api.steal(tmp_path, data, budget=10)


def test_the_default_pool_works_on_your_own_data(data):
    """A user's data has no registered out-of-distribution pair: `ood` is the digits at its shape
    (it was "unknown dataset 'custom'", so the module docstring's example failed)."""
    from divqat.data.pools import query_pool

    pool = query_pool("ood", data)
    assert pool.images.shape[1:] == data.input_shape and len(pool) == 1797


def test_your_own_surrogate_and_the_attack_parameters(data):
    """ART-style: an attack object with its parameters, extract() training a copy of the user's
    own surrogate module (left as handed in)."""
    mine = SmallNet()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    thief = api.attack("jbda", budget=150, epochs=2, seed_size=50, round_epochs=1)
    clone = thief.extract(lambda x: torch.softmax(x.flatten(1)[:, :10] * 5, -1), data.thief_pool.images,
                          surrogate=mine, num_classes=10)  # fmt: skip
    assert type(clone) is SmallNet and clone is not mine
    assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())
    assert thief.books["queries"] == 150 and thief.config.params == {"round_epochs": 1, "seed_size": 50}
    with pytest.raises(DivqatError, match="has no parameter 'stepp'"):
        api.attack("jbda", stepp=0.2)


def test_the_module_docstring_example_runs(data, tmp_path, monkeypatch):
    """api.py's own example, with a tiny dataset, a small net and small budgets filled in."""
    import re
    import textwrap

    code = textwrap.dedent(api.__doc__.split("\n\n", 1)[1].split("\n\n`train_victim`")[0])
    code = code.replace('"runs/mine")', '"runs/mine", fp_epochs=1, epochs=1, batch_size=64)')
    code = re.sub(r"budget=5000", "budget=64, epochs=1", code)
    monkeypatch.chdir(tmp_path)
    train, test = data.victim_train, data.test
    scope = {"train_images": train.images, "train_labels": train.labels, "test_images": test.images,
             "test_labels": test.labels, "MyNet": SmallNet}  # fmt: skip
    exec(compile(code, "api.py", "exec"), scope)
    assert scope["scores"]["victim_accuracy"] > 0.1 and scope["result"]["queries"] == 64
    assert (tmp_path / "runs" / "mine" / "model.onnx").is_file()
