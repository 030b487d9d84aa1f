"""Every registered model: right output shape, and quantizable by the PT2E flow."""

import pytest
import torch

from divqat.errors import DivqatError
from divqat.models import MODELS, create_model
from divqat.quant import QuantConfig, convert, prepare


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 10), ((3, 32, 32), 100)])
def test_output_shape(name, shape, classes):
    model = create_model(name, num_classes=classes, input_shape=shape).eval()
    assert model(torch.rand(3, *shape)).shape == (3, classes)


def shape_of(name: str) -> tuple[int, int, int]:
    return (3, 32, 32) if name.startswith("resnet") else (1, 28, 28)


@pytest.mark.parametrize("qat", [False, True])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_quantizable(name, qat):
    torch.manual_seed(0)
    shape = shape_of(name)
    model = create_model(name, num_classes=10, input_shape=shape)
    prepared = prepare(model, shape, QuantConfig(8, 8), qat=qat)
    x = torch.rand(5, *shape)
    prepared(x)  # one observation pass
    converted = convert(prepared)
    ops = {str(n.target) for n in converted.graph.nodes}
    assert any("quantize_per_tensor" in op for op in ops)
    assert converted(x).shape == (5, 10)
    assert converted(torch.rand(1, *shape)).shape == (1, 10)  # any batch size


def test_normalization_is_inside_the_model():
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28), mean=[0.5], std=[0.25]).eval()
    assert model.normalize(torch.full((1, 1, 2, 2), 0.75)).unique().item() == pytest.approx(1.0)


def test_unknown_model():
    with pytest.raises(DivqatError, match="unknown model"):
        create_model("vgg99", num_classes=10, input_shape=(1, 28, 28))
