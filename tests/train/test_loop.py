import pytest
import torch

from divqat.errors import DivqatError
from divqat.models import create_model
from divqat.quant import QuantConfig, prepare
from divqat.train import TrainConfig, cross_entropy, fit


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.rand(n, 1, 28, 28, generator=g), "targets": torch.randint(0, 10, (n,), generator=g)}


def test_same_seed_same_weights():
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
        fit(model, _data(), cross_entropy, TrainConfig(epochs=2, batch_size=64, seed=3), quiet=True)
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_qat_trains_the_prepared_graph_not_the_fp_model():
    """The known defect of public code: an optimizer over the FP model's parameters."""
    torch.manual_seed(0)
    fp = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    before = {k: v.clone() for k, v in fp.state_dict().items()}
    prepared = prepare(fp, (1, 28, 28), QuantConfig(8, 8), qat=True)
    start = {k: v.clone() for k, v in prepared.state_dict().items()}
    fit(prepared, _data(), cross_entropy, TrainConfig(epochs=1, batch_size=64), quiet=True)
    assert all(torch.equal(before[k], fp.state_dict()[k]) for k in before)
    changed = [k for k, v in prepared.state_dict().items() if k in start and not torch.equal(start[k], v)]
    assert any("weight" in k for k in changed)


def test_soft_targets_are_accepted():
    data = _data(64)
    data["targets"] = torch.softmax(torch.randn(64, 10), -1)
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    history = fit(model, data, cross_entropy, TrainConfig(epochs=1, batch_size=32), quiet=True)
    assert len(history.epoch_loss) == 1 and history.epoch_loss[0] > 0


def test_bad_config():
    with pytest.raises(DivqatError):
        TrainConfig(lr=0)
