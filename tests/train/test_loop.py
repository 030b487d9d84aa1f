import copy

import pytest
import torch

from divqat.errors import DivqatError
from divqat.models import create_model
from divqat.quant import QuantConfig, prepare
from divqat.quant.pt2e import frozen_observers, outlier_forward, set_mode
from divqat.train import TrainConfig, cross_entropy, fit


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.rand(n, 1, 28, 28, generator=g), "targets": torch.randint(0, 10, (n,), generator=g)}


def test_same_seed_same_weights():
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
        fit(model, _data(), cross_entropy, TrainConfig(epochs=2, batch_size=64, seed=3))
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_qat_trains_the_prepared_graph_not_the_fp_model():
    """The known defect of public code: an optimizer over the FP model's parameters."""
    torch.manual_seed(0)
    fp = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    before = {k: v.clone() for k, v in fp.state_dict().items()}
    prepared = prepare(fp, (1, 28, 28), QuantConfig(8, 8), qat=True)
    start = {k: v.clone() for k, v in prepared.state_dict().items()}
    fit(prepared, _data(), cross_entropy, TrainConfig(epochs=1, batch_size=64))
    assert all(torch.equal(before[k], fp.state_dict()[k]) for k in before)
    changed = [k for k, v in prepared.state_dict().items() if k in start and not torch.equal(start[k], v)]
    assert any("weight" in k for k in changed)


def test_soft_targets_are_accepted():
    data = _data(64)
    data["targets"] = torch.softmax(torch.randn(64, 10), -1)
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    history = fit(model, data, cross_entropy, TrainConfig(epochs=1, batch_size=32))
    assert len(history.epoch_loss) == 1 and history.epoch_loss[0] > 0


def test_bad_config():
    with pytest.raises(DivqatError):
        TrainConfig(lr=0)


def _bn_graph():
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=10, input_shape=(1, 28, 28), mean=[0.5], std=[0.25])
    prepared = prepare(model, (1, 28, 28), QuantConfig(8, 8), qat=True)
    set_mode(prepared, train=True)
    prepared(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)))  # observers and statistics set
    return prepared


def test_the_outlier_forward_leaves_every_buffer_and_uses_the_deployed_statistics():
    """DivQAT's outliers through a QAT graph with batch norm: every buffer (running statistics,
    batch counts, observer ranges, scales) unchanged, bit for bit, and the answer the one the
    deployed (eval-mode) graph gives; gradients reach the graph's own parameters."""
    prepared = _bn_graph()
    deployed = copy.deepcopy(prepared)
    set_mode(deployed, train=False)
    before = {k: v.clone() for k, v in prepared.state_dict().items()}
    outliers = 3 * torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(2))  # far outside the data
    with outlier_forward(prepared) as forward:  # what fit and a user's own loop call
        out = forward(outliers)
    with outlier_forward(prepared) as again:
        assert again is forward  # the eval-mode twin is made once per model
    out.sum().backward()
    assert [k for k, v in prepared.state_dict().items() if not torch.equal(v, before[k])] == []
    with frozen_observers(deployed), torch.no_grad():
        assert torch.allclose(out, deployed(outliers), atol=1e-6)
    assert all(p.grad is not None for p in prepared.parameters())


def test_fit_with_outliers_moves_no_statistic_the_deployed_model_keeps():
    """One step of fit (one batch), with and without outliers: the running statistics (folded into
    the int8 model) are the same, since the outlier forward must not update them (it did: half
    of all batch-norm updates came from outliers)."""

    class WithOutliers:
        def __call__(self, logits, batch, progress):
            return cross_entropy(logits, batch)

        def outlier_term(self, logits, batch, progress):
            return -logits.log_softmax(-1).mean()

    data = _data(64)
    stats = []
    for objective, extra in ((cross_entropy, {}), (WithOutliers(), {"outliers": 3 * torch.rand(64, 1, 28, 28)})):
        prepared = _bn_graph()
        fit(prepared, {**data, **extra}, objective, TrainConfig(epochs=1, batch_size=64, lr=1e-3))
        stats.append({k: v for k, v in prepared.state_dict().items() if "running_" in k or "num_batches" in k})
    assert stats[0].keys() == stats[1].keys() and len(stats[0]) >= 4
    assert all(torch.equal(stats[0][k], stats[1][k]) for k in stats[0])
