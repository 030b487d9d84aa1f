"""The `divqat` command line. Every bad input ends in one line on stderr and exit code 2."""

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from divqat.errors import DivqatError
from divqat.plugins import quiet_warnings
from divqat.serve.cli import register as register_serve_commands
from divqat.ui import console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="DivQAT: quantized CNNs that are hard to steal by model extraction.",
)


@app.callback()
def options(
    plugin: Annotated[
        list[str] | None,
        typer.Option(help="Import MODULE (or a .py file) first: your own registered models, datasets, defenses."),
    ] = None,
):
    """DivQAT: quantized CNNs that are hard to steal by model extraction."""
    from divqat.plugins import load_plugins

    load_plugins(plugin or [])


def print_metrics(result: dict, title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Run directory to write (must be new or empty).")],
    dataset: Annotated[str, typer.Option(help="Victim's dataset.")] = "fashion-mnist",
    model: Annotated[str, typer.Option(help="Architecture from the model registry.")] = "lenet5",
    method: Annotated[str, typer.Option(help="fp, ptq, qat or divqat.")] = "divqat",
    alpha: Annotated[float, typer.Option(help="DivQAT divergence weight (>= 0).")] = 0.5,
    divergence: Annotated[str, typer.Option(help="kl (the paper's), reverse-kl or js.")] = "js",
    non_target: Annotated[
        bool, typer.Option("--non-target/--all-classes", help="Divergence over the non-target classes only.")
    ] = True,
    logq_floor: Annotated[float, typer.Option(help="Clamp log q at log(this) in the divergence; 0: off.")] = 0.0,
    hinge: Annotated[float, typer.Option(help="Cap each sample's divergence at this; 0: off.")] = 0.0,
    warmup: Annotated[float, typer.Option(help="Fraction of training over which alpha ramps up.")] = 0.0,
    beta: Annotated[float, typer.Option(help="Weight of the outlier term (0: off).")] = 0.0,
    outlier_loss: Annotated[
        str, typer.Option(help="What to answer on outliers: misinformation, shift, uniform or divergence.")
    ] = "divergence",
    outliers: Annotated[
        str, typer.Option(help="Outlier sources, comma-separated (divqat list: outlier sources).")
    ] = "noise,strokes,shapes",
    distill: Annotated[
        float, typer.Option(help="Weight of KL(f_fp || f_q) on training images: keeps their answers (0: off).")
    ] = 0.0,
    bits: Annotated[int, typer.Option(help="Weight bits: 8 or 4.")] = 8,
    activation_bits: Annotated[
        int | None, typer.Option(help="Activation bits: 8 or 7; default 8 with VNNI, else 7.")
    ] = None,
    epochs: Annotated[int, typer.Option(help="QAT / DivQAT epochs (FP epochs for --method fp).")] = 2,
    lr: Annotated[float, typer.Option(help="QAT / DivQAT learning rate.")] = 1e-4,
    fp_epochs: Annotated[int, typer.Option(help="Epochs of FP training when --from is not given.")] = 10,
    fp_lr: Annotated[float, typer.Option(help="FP learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option()] = 256,
    seed: Annotated[int, typer.Option()] = 0,
    fp_from: Annotated[
        Path | None, typer.Option("--from", help="Start from the FP model of this run directory.")
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="Where the dataset's files are.")] = None,
    train_limit: Annotated[int | None, typer.Option(help="Use only the first N training images.")] = None,
    test_limit: Annotated[int | None, typer.Option(help="Evaluate on only the first N test images.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
):
    """Train a victim: FP, then PTQ, QAT or DivQAT; write int8 ONNX, weights and metrics.json."""
    from divqat.pipeline import train as run_train
    from divqat.train.victim import VictimConfig

    if method == "fp":  # --epochs then counts FP epochs, run at --fp-lr
        fp_epochs = epochs
    config = VictimConfig(
        dataset=dataset, model=model, method=method, alpha=alpha, divergence=divergence,
        non_target=non_target, logq_floor=logq_floor, hinge=hinge, warmup=warmup, beta=beta,
        outlier_loss=outlier_loss, outliers=outliers, distill=distill, weight_bits=bits,
        activation_bits=activation_bits, epochs=epochs, lr=lr, fp_epochs=fp_epochs, fp_lr=fp_lr,
        batch_size=batch_size, seed=seed, train_limit=train_limit,
    )  # fmt: skip
    check_model_and_data_names(model=config.model, dataset=config.dataset)
    result = run_train(
        config, out, data_root=data_root, fp_from=fp_from, overwrite=overwrite, quiet=quiet, test_limit=test_limit
    )
    print_metrics(result, f"{method} -> {out}")


def parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DivqatError(f"--defense-param takes key=value, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise DivqatError(f"--defense-sweep takes key=v1,v2,..., got {text!r}")
    return key.strip(), items


@app.command()
def attack(
    victim: Annotated[Path, typer.Option(help="Victim run directory (from `divqat train`).")],
    out: Annotated[Path, typer.Option(help="Result directory to write (must be new or empty).")],
    attack: Annotated[str, typer.Option(help="knockoff, knockoff-adaptive, jbda or dfme.")] = "knockoff",
    pool: Annotated[str, typer.Option(help="Query pool: in, ood, mixed, photos or validation.")] = "ood",
    budget: Annotated[
        int | None, typer.Option(help="Queries the thief may make [default: 10,000; http: what the key has left].")
    ] = None,
    labels: Annotated[str, typer.Option(help="soft: train on probabilities; hard: on top-1 labels.")] = "soft",
    surrogate: Annotated[str, typer.Option(help="Surrogate architecture.")] = "lenet5",
    epochs: Annotated[int, typer.Option(help="Surrogate training epochs.")] = 20,
    augment: Annotated[bool, typer.Option(help="Train the surrogate on augmented views of its queries.")] = False,
    confidence_tau: Annotated[
        float, typer.Option(help="Adaptive thief: drop (or down-weight) answers less confident than this.")
    ] = 0.0,
    confidence_mode: Annotated[str, typer.Option(help="drop or weight, for --confidence-tau.")] = "drop",
    smoothing: Annotated[int, typer.Option(help="Adaptive thief: ask each image as k augmented copies.")] = 1,
    in_seeds: Annotated[int, typer.Option(help="Adaptive thief: mix this many in-distribution images in.")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    backend: Annotated[
        str, typer.Option(help="onnx (deployed file), int8 (in-process kernels), fp, or http (a served victim).")
    ] = "onnx",
    url: Annotated[str | None, typer.Option(help="--backend http: the server, e.g. http://127.0.0.1:8000.")] = None,
    api_key: Annotated[
        str | None, typer.Option("--key", envvar="DIVQAT_KEY", help="--backend http: the API key.")
    ] = None,
    defense: Annotated[list[str] | None, typer.Option(help="Post-hoc defense, repeatable (applied in order).")] = None,
    defense_param: Annotated[
        list[str] | None, typer.Option(help="key=value for the last --defense, repeatable.")
    ] = None,
    defense_sweep: Annotated[
        str | None, typer.Option(help="key=v1,v2,...: one run per value of the last defense's parameter.")
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="Where the dataset's files are.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing result directory.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
):
    """Steal a victim through its black-box interface; write result.json and the surrogate.

    With --defense-sweep, OUT holds one result directory per value (e.g. OUT/beta-0.1)."""
    from divqat.attacks import AttackConfig, get_attack
    from divqat.blackbox import BACKENDS, load_backend
    from divqat.defenses import create_defense
    from divqat.extraction import run_attack

    get_attack(attack)
    if backend not in BACKENDS:
        raise DivqatError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend != "http" and url:  # (not --key: it may come from DIVQAT_KEY)
        raise DivqatError("--url is for --backend http")
    if budget is None:  # a served victim's budget is the server's
        budget = load_backend(victim, "http", url=url, key=api_key).remaining if backend == "http" else 10_000
    names = defense or []
    if defense_param and not names:
        raise DivqatError("--defense-param needs a --defense")
    params = parse_params(defense_param or [])
    runs = {out: params}
    if defense_sweep:
        if not names:
            raise DivqatError("--defense-sweep needs a --defense")
        key, values = parse_sweep(defense_sweep)
        runs = {out / f"{key}-{v}": {**params, key: v} for v in values}
    config = AttackConfig(
        attack, pool, budget, labels, surrogate, epochs, seed=seed, augment=augment, confidence_tau=confidence_tau,
        confidence_mode=confidence_mode, smoothing=smoothing, in_seeds=in_seeds,
    )  # fmt: skip
    check_model_and_data_names(model=surrogate)
    # Every defense of every run is built (and so validated) before the first run starts.
    chains = {
        target: tuple(create_defense(n, p if i == len(names) - 1 else {}, seed=seed) for i, n in enumerate(names))
        for target, p in runs.items()
    }
    for target, defenses in chains.items():
        result = run_attack(
            victim, config, target, data_root=data_root, backend=backend, url=url, key=api_key, defenses=defenses,
            overwrite=overwrite,
            quiet=quiet,
        )  # fmt: skip
        print_metrics({k: v for k, v in result.items() if k != "defenses"}, f"{attack} -> {target}")


def check_model_and_data_names(model: str | None = None, dataset: str | None = None) -> None:
    """Unknown names fail here, in a second, rather than after loading data."""
    from divqat.data import get_dataset
    from divqat.models import MODELS

    if dataset is not None:
        get_dataset(dataset)
    if model is not None:
        MODELS.lookup(model)


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory written by `divqat train`.")],
    data_root: Annotated[Path | None, typer.Option(help="Where the dataset's files are.")] = None,
    test_limit: Annotated[int | None, typer.Option(help="Evaluate on only the first N test images.")] = None,
):
    """Re-measure a run's deployed ONNX model (and its in-process int8 model) on the test set."""
    from divqat.pipeline import evaluate as run_evaluate

    print_metrics(run_evaluate(run, data_root=data_root, test_limit=test_limit), f"evaluate {run}")


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML), e.g. configs/fashion-mnist-small.yaml.")],
    out: Annotated[Path, typer.Option(help="Results directory; rerun with the same one to resume.")],
    jobs: Annotated[int, typer.Option(help="Jobs run at once (processes; with --executor ray, on each node).")] = 1,
    data_root: Annotated[Path | None, typer.Option(help="Where the dataset's files are.")] = None,
    report: Annotated[bool, typer.Option(help="Write the report when the grid is done.")] = True,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    executor: Annotated[
        str, typer.Option(help="local (this machine) or ray (a Ray cluster: pip install -e '.[ray]').")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="--executor ray: the cluster, auto or HOST:PORT [default: Ray on this machine].")
    ] = None,
):
    """Run an experiment grid; finished jobs are cached by hash and never recomputed."""
    from divqat.experiments import load_experiment, run_experiment, write_report

    if jobs < 1:
        raise DivqatError(f"--jobs must be >= 1, got {jobs}")
    experiment = load_experiment(config)
    summary = run_experiment(
        experiment, out, jobs=jobs, data_root=data_root, quiet=quiet, executor=executor, address=address
    )
    console.print(f"{summary['ran']} of {summary['jobs']} jobs run in {summary['seconds']:.0f} s")
    if report:
        console.print(f"report: {write_report(out)[0]}")


@app.command(name="report")
def report_command(
    results: Annotated[Path, typer.Argument(help="A results directory written by `divqat run`.")],
):
    """Write report.md, report.html and PNG plots for a results directory."""
    from divqat.experiments import write_report

    for path in write_report(results):
        console.print(str(path))


@app.command()
def download(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    data_root: Annotated[Path, typer.Option(help="Directory to download into.")] = Path("data"),
):
    """Download a dataset and verify its checksums (needs internet)."""
    from divqat.data import get_dataset
    from divqat.data.download import download as fetch

    target = fetch(get_dataset(dataset), data_root)
    console.print(f"{dataset}: {target}")


@app.command(name="list")
def list_registries():
    """The registered datasets, models, methods and divergences."""
    from divqat.attacks import ATTACKS
    from divqat.data import DATASETS
    from divqat.data.outliers import OUTLIERS
    from divqat.data.pools import POOLS
    from divqat.defenses import DEFENSES
    from divqat.models import MODELS
    from divqat.train import DIVERGENCES
    from divqat.train.outlier_losses import OUTLIER_LOSSES
    from divqat.train.victim import METHODS

    registries = {
        "datasets": DATASETS, "models": MODELS, "methods": METHODS, "divergences": DIVERGENCES,
        "outlier losses": OUTLIER_LOSSES, "outlier sources": OUTLIERS, "query pools": POOLS, "attacks": ATTACKS,
        "defenses": DEFENSES,
    }  # fmt: skip
    for name, items in registries.items():
        console.print(f"{name}: {', '.join(items)}")


register_serve_commands(app)  # `divqat serve` and `divqat keys`, listed after the commands above


def main(argv: list[str] | None = None) -> int:
    quiet_warnings()
    try:
        app(args=argv, standalone_mode=False)
    except DivqatError as e:
        print(f"divqat: error: {e}", file=sys.stderr)
        return 2
    except typer.TyperException as e:  # usage errors: unknown option, value of the wrong type
        print(f"divqat: error: {e.format_message()}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("divqat: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    sys.exit(main())
