"""Speed of DivQAT training and of the int8 model, on the full Fashion-MNIST victim-train split.

    python benchmarks/speed.py --fp runs/sweep/seed0/fp

1. Epoch time of DivQAT / QAT (same prepared LeNet-5, same data, batch 256). The teacher's
   softmax is cached once before training (its cost is reported separately); the extra work per
   step is then only the divergence. Interleaved repeats, medians.
2. Inference throughput at batch 256: FP32 eager vs the int8 model through oneDNN kernels
   (torch.compile of the converted PT2E graph) and through onnxruntime (the deployed file);
   and the same FP32 / int8 comparison for a CIFAR-size ResNet-20 (shapes only).
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from divqat import artifacts
from divqat.data import load_splits
from divqat.models import create_model
from divqat.quant import OnnxModel, QuantConfig, compile_int8, convert, prepare
from divqat.train import DivQATLoss, TrainConfig, cross_entropy, fit, predict_proba


def epoch_times(fp, splits, repeats: int) -> dict:
    train = splits.victim_train
    start = time.perf_counter()
    teacher = predict_proba(fp, train.images)
    cache_seconds = time.perf_counter() - start
    plain = {"inputs": train.images, "targets": train.labels}
    with_teacher = {**plain, "teacher_probs": teacher}
    times = {"qat": [], "divqat": []}
    for _ in range(repeats):
        for name, data, objective in (
            ("qat", plain, cross_entropy),
            ("divqat", with_teacher, DivQATLoss(1.0, "js", non_target=True)),
        ):
            model = prepare(fp, splits.input_shape, QuantConfig(8, 8), qat=True)
            history = fit(model, data, objective, TrainConfig(epochs=1, lr=1e-4))
            times[name].append(history.epoch_seconds[0])
    qat, div = statistics.median(times["qat"]), statistics.median(times["divqat"])
    return {"qat_epoch_s": qat, "divqat_epoch_s": div, "ratio": div / qat, "teacher_cache_s": cache_seconds}


def throughput(fn, x: torch.Tensor, seconds: float = 5.0) -> float:
    with torch.no_grad():
        for _ in range(5):
            fn(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn(x)
            n += 1
    return n * len(x) / (time.perf_counter() - start)


def inference(fp, run: Path, splits, batch: int) -> dict:
    x = splits.test.images[:batch].contiguous()
    prepared = prepare(fp, splits.input_shape, QuantConfig(8, 8), qat=False)
    prepared(splits.victim_train.images[:2048])
    int8 = compile_int8(convert(prepared))
    onnx = OnnxModel(run / artifacts.ONNX)
    fp.eval()
    rates = {
        "fp32_eager": throughput(fp, x),
        "int8_onednn": throughput(int8, x),
        "int8_onnxruntime": throughput(onnx.predict_proba, x),
    }
    return {f"{k}_img_s": v for k, v in rates.items()} | {
        "int8_onednn_vs_fp32": rates["int8_onednn"] / rates["fp32_eager"],
        "int8_onnxruntime_vs_fp32": rates["int8_onnxruntime"] / rates["fp32_eager"],
    }


def inference_shape_only(name: str, shape: tuple[int, int, int], batch: int) -> dict:
    """Throughput depends on shapes, not weights: a randomly initialised model, calibrated on
    random images, compared FP32 eager vs int8 oneDNN at the same batch."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=shape).eval()
    prepared = prepare(model, shape, QuantConfig(8, 8), qat=False)
    prepared(torch.rand(512, *shape))
    int8 = compile_int8(convert(prepared))
    x = torch.rand(batch, *shape)
    fp32, q = throughput(model, x), throughput(int8, x)
    return {f"{name}_fp32_eager_img_s": fp32, f"{name}_int8_onednn_img_s": q, f"{name}_int8_vs_fp32": q / fp32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp", type=Path, default=Path("runs/sweep/seed0/fp"), help="An FP run directory.")
    parser.add_argument("--int8", type=Path, default=Path("runs/sweep/seed0/qat"), help="A quantized run directory.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    fp = artifacts.load_fp(args.fp)
    splits = load_splits("fashion-mnist")
    print(f"threads: {torch.get_num_threads()}")
    results = epoch_times(fp, splits, args.repeats) | inference(fp, args.int8, splits, args.batch)
    results |= inference_shape_only("resnet20", (3, 32, 32), args.batch)
    for key, value in results.items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
