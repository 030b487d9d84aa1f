"""torchao's pattern graphs exported once per process (quant/patterns.py) and convert's batch-norm
folding restricted to the kinds of convolution a graph holds (quant/pt2e.py): the time of the
PT2E steps with and without them, and whether the results are the same - the same converted
nodes, bit-identical outputs and parameters - for every registered model with batch norm.

Each model: QAT prepare, 3 training steps, a move to eval (an evaluation) and back to train, 3
more steps, convert; first as torchao does it (both replaced by blocks that do nothing), then as
divqat does (the cache is empty at the first model).

    python benchmarks/convert_fold.py
"""

import time
import warnings
from contextlib import nullcontext
from unittest import mock

import torch

from divqat.models import MODELS, create_model
from divqat.quant import QuantConfig, pt2e


def shape_of(name: str) -> tuple[int, int, int]:
    return (3, 32, 32) if name.startswith("resnet") else (1, 28, 28)


def quantized(name: str) -> tuple[torch.fx.GraphModule, dict[str, float]]:
    shape = shape_of(name)
    torch.manual_seed(0)
    times, start = {}, time.perf_counter()
    prepared = pt2e.prepare(create_model(name, num_classes=10, input_shape=shape), shape, QuantConfig(8, 8), qat=True)
    times["prepare"] = time.perf_counter() - start
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    times["moves"] = 0.0
    for mode in ("eval", "train"):
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(prepared(torch.rand(32, *shape)), torch.randint(0, 10, (32,)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        start = time.perf_counter()
        pt2e.set_mode(prepared, train=mode == "train")
        times["moves"] += time.perf_counter() - start
        with torch.no_grad():
            prepared(torch.rand(8, *shape))
    start = time.perf_counter()
    converted = pt2e.convert(prepared)
    times["convert"] = time.perf_counter() - start
    return converted, times


def as_torchao_does():
    off = lambda *args: nullcontext()  # noqa: E731
    return mock.patch.multiple(pt2e, cached_patterns=off, folding_only_present_convs=off)


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    models = {n: create_model(n, num_classes=10, input_shape=shape_of(n)) for n in sorted(MODELS)}
    with_bn = [n for n, model in models.items() if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())]
    plain = {}
    with as_torchao_does():
        for name in with_bn:
            plain[name] = quantized(name)
    print("| model | prepare, torchao (s) | divqat (s) | 2 moves, torchao (s) | divqat (s) | convert, torchao (s) | "
          "divqat (s) | same nodes | outputs equal | parameters equal |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in with_bn:
        (a, ta), (b, tb) = plain[name], quantized(name)
        x = torch.rand(64, *shape_of(name))
        same_nodes = [str(n.target) for n in a.graph.nodes] == [str(n.target) for n in b.graph.nodes]
        pa, pb = (
            dict(a.named_parameters()) | dict(a.named_buffers()),
            dict(b.named_parameters()) | dict(b.named_buffers()),
        )
        same_params = pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
        cells = " | ".join(f"{ta[k]:.1f} | {tb[k]:.1f}" for k in ("prepare", "moves", "convert"))
        print(f"| {name} | {cells} | {same_nodes} | {torch.equal(a(x), b(x))} | {same_params} |", flush=True)


if __name__ == "__main__":
    main()
