"""The deployed int8 ONNX model against FP32 in onnxruntime and FP32 eager, LeNet-5 and ResNet-20.

    python benchmarks/onnx_speed.py            # idle machine; prints a Markdown table

Throughput depends on shapes, not weights: each model is randomly initialised, PTQ-calibrated
on random images (8-bit weights and activations), and exported the way `divqat train` exports
(the FP model through the same exporter). onnxruntime uses its default graph optimisations and
as many threads as cores; every figure is the median of 5 timed windows of 1 s.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from divqat.models import create_model
from divqat.quant import OnnxModel, QuantConfig, convert, export_onnx, prepare

MODELS = {"lenet5": (1, 28, 28), "resnet20": (3, 32, 32)}


def images_per_second(fn, x: torch.Tensor, windows: int = 5, seconds: float = 1.0) -> float:
    for _ in range(3):
        fn(x)
    rates = []
    for _ in range(windows):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn(x)
            n += 1
        rates.append(n * len(x) / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(name: str, shape: tuple[int, int, int], batches: list[int], folder: Path) -> list[list[str]]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=shape).eval()
    prepared = prepare(model, shape, QuantConfig(8, 8), qat=False)
    with torch.no_grad():
        prepared(torch.rand(512, *shape))
    export_onnx(model, shape, folder / f"{name}-fp32.onnx")
    export_onnx(convert(prepared), shape, folder / f"{name}-int8.onnx")
    fp32, int8 = OnnxModel(folder / f"{name}-fp32.onnx"), OnnxModel(folder / f"{name}-int8.onnx")
    rows = []
    for batch in batches:
        x = torch.rand(batch, *shape)
        with torch.no_grad():
            eager = images_per_second(model, x)
        onnx_fp32 = images_per_second(fp32.predict_proba, x)
        onnx_int8 = images_per_second(int8.predict_proba, x)
        rows.append([name, str(batch), f"{eager:,.0f}", f"{onnx_fp32:,.0f}", f"{onnx_int8:,.0f}",
                     f"**{onnx_int8 / onnx_fp32:.2f}x**", f"{onnx_int8 / eager:.2f}x"])  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    args = parser.parse_args()
    print(f"threads: {torch.get_num_threads()}")
    headers = ["model", "batch", "FP32 eager img/s", "ONNX FP32 img/s", "ONNX int8 img/s", "int8 / ONNX FP32",
               "int8 / eager"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for name, shape in MODELS.items() for row in measure(name, shape, args.batches, Path(tmp))]
    print("\n| " + " | ".join(headers) + " |\n|" + " --- |" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
