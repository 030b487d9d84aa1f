"""The `divqat` command line. Every bad input ends in one line on stderr and exit code 2."""

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from divqat.cli_options import DefenseOption, DefenseParamOption, with_config_options
from divqat.configs import PRESETS, AttackConfig, VictimConfig, victim_config
from divqat.errors import DivqatError
from divqat.plugins import quiet_warnings
from divqat.serve.cli import KeySecretOption
from divqat.serve.cli import register as register_serve_commands
from divqat.ui import console, progress_reporter

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


TRAIN_HELP = """Train a victim: FP, then PTQ, QAT or DivQAT; write int8 ONNX, weights and metrics.json.

--method divqat (the default) trains outlier-aware DivQAT, the setting measured to protect: alpha 0, beta 2,
distill 3, 4 QAT epochs (-0.65 pp of accuracy; the best out-of-distribution thief -19.9 pp on the digits and
-30.5 pp on photos against QAT, 3 seeds; docs/divqat.md).

--preset paper: the paper's objective, CE - 0.5 * KL(f_fp || f_q) over all classes (protects by <= 1 pp).
--preset bounded: non-target Jensen-Shannon at alpha 0.5, no outlier term. Options given override the preset.

No defense that keeps in-distribution answers exact stops a thief who holds in-distribution images."""


@app.command(help=TRAIN_HELP)
@with_config_options(VictimConfig)
def train(
    settings: dict,
    out: Annotated[Path, typer.Option(help="Run directory to write (must be new or empty).")],
    preset: Annotated[
        str | None, typer.Option(help="Named objective: protect (the default), paper or bounded.")
    ] = None,
    fp_from: Annotated[
        Path | None, typer.Option("--from", help="Start from the FP model of this run directory.")
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="Where the dataset's files are.")] = None,
    test_limit: Annotated[int | None, typer.Option(help="Evaluate on only the first N test images.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
):
    from divqat.pipeline import train as run_train

    if settings.get("method") == "fp" and "epochs" in settings:  # --epochs then counts FP epochs
        settings["fp_epochs"] = settings["epochs"]
    config = victim_config(preset, **settings)
    with progress_reporter(quiet) as progress:
        result = run_train(
            config, out, data_root=data_root, fp_from=fp_from, overwrite=overwrite, progress=progress,
            test_limit=test_limit,
        )  # fmt: skip
    print_metrics(result, f"{config.method} -> {out}")


@app.command()
@with_config_options(AttackConfig)
def attack(
    settings: dict,
    victim: Annotated[Path, typer.Option(help="Victim run directory (from `divqat train`).")],
    out: Annotated[Path, typer.Option(help="Result directory to write (must be new or empty).")],
    backend: Annotated[
        str, typer.Option(help="onnx (deployed file), int8 (in-process kernels), fp, or http (a served victim).")
    ] = "onnx",
    url: Annotated[str | None, typer.Option(help="--backend http: the server, e.g. http://127.0.0.1:8000.")] = None,
    api_key: Annotated[
        str | None, typer.Option("--key", envvar="DIVQAT_KEY", help="--backend http: the API key.")
    ] = None,
    defense: DefenseOption = None,
    defense_param: DefenseParamOption = None,
    defense_sweep: Annotated[
        str | None, typer.Option(help="key=v1,v2,...: one run per value of the last defense's parameter.")
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="Where the dataset's files are.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing result directory.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
):
    """Steal a victim through its black-box interface; write result.json and the surrogate.

    With --defense-sweep, OUT holds one result directory per value (e.g. OUT/beta-0.1)."""
    from divqat.blackbox import BACKENDS, load_backend
    from divqat.defenses.chain import build_chain, parse_params, parse_sweep
    from divqat.extraction import run_attack

    if backend not in BACKENDS:
        raise DivqatError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend != "http" and url:  # (not --key: it may come from DIVQAT_KEY)
        raise DivqatError("--url is for --backend http")
    if "budget" not in settings and backend == "http":  # a served victim's budget is the server's
        settings["budget"] = load_backend(victim, "http", url=url, key=api_key).remaining
    config = AttackConfig(**settings)
    names = defense or []
    params = parse_params(defense_param or [])
    runs = {out: params}
    if defense_sweep:
        if not names:
            raise DivqatError("--defense-sweep needs a --defense")
        key, values = parse_sweep(defense_sweep)
        runs = {out / f"{key}-{v}": {**params, key: v} for v in values}
    # Every defense of every run is built (and so validated) before the first run starts.
    chains = {target: build_chain(names, p, seed=config.seed) for target, p in runs.items()}
    for target, defenses in chains.items():
        with progress_reporter(quiet) as progress:
            result = run_attack(
                victim, config, target, data_root=data_root, backend=backend, url=url, key=api_key,
                defenses=defenses, overwrite=overwrite, progress=progress,
            )  # fmt: skip
        print_metrics({k: v for k, v in result.items() if k != "defenses"}, f"{config.attack} -> {target}")


@app.command()
def verify(
    suspect: Annotated[
        str | None, typer.Argument(help="An ONNX file or a divqat run directory (or --url for a served model).")
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="The key database of `divqat serve --watermark` (file or postgresql://).")
    ] = None,
    key: Annotated[
        list[str] | None, typer.Option(help="Verify these accounts only (key ids, as `divqat keys list` shows).")
    ] = None,
    key_secret: KeySecretOption = None,
    record: Annotated[
        list[Path] | None, typer.Option(help="A watermark record of a grid's attack (its watermark.safetensors).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="A served suspect, e.g. http://127.0.0.1:9000.")] = None,
    suspect_key: Annotated[
        str | None, typer.Option(envvar="DIVQAT_SUSPECT_KEY", help="--url: the API key to query the suspect with.")
    ] = None,
    significance: Annotated[float, typer.Option(help="Verdict at p < this (Bonferroni over the tests).")] = 1e-6,
    max_queries: Annotated[int, typer.Option(help="Suspect queries to spend at most, in all.")] = 1000,
    together: Annotated[
        bool,
        typer.Option(
            help="Also test the accounts' records as one, first, with up to half the queries: one thief "
            "behind several keys (pool the keys one client holds, not every key of a server)."
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
):
    """Is SUSPECT a clone stolen through one of the accounts? Asks it the watermarked images each
    account was told and tests how strongly it favours the marks over the other classes (an exact
    test), and, behind scramble, the images it was told a keyed order on (a correlation test;
    docs/divqat.md); with --together, the named accounts' records also as one (a thief behind
    several keys)."""
    import json

    from divqat.verify import POOLED, load_suspect
    from divqat.verify import verify as run_verify

    if together and db is not None and not key:
        raise DivqatError("--together pools the keys one client holds: name them with --key (not every key of --db)")
    records = load_records(db, key or [], record or [], key_secret)
    if suspect is None and not url:
        raise DivqatError("name a SUSPECT (an ONNX file or a run directory) or give --url")
    answer = load_suspect(suspect or "", url=url, key=suspect_key)
    result = {"suspect": url or suspect, **run_verify(answer, records, significance=significance,
                                                      max_queries=max_queries, together=together)}  # fmt: skip
    if together and not any(a["account"] == POOLED for a in result["accounts"]):
        console.print("--together: fewer than two of these accounts hold evidence; nothing was pooled")
    if json_out:
        print(json.dumps(result))
        return
    table = Table(title=f"{result['suspect']}: {result['queries']} queries, verdict at p < {significance:g}")
    for column in ("account", "test", "asked", "matches", "innocent rate", "p-value", "stolen"):
        table.add_column(column, justify="left" if column in ("account", "test") else "right")
    for a in result["accounts"]:
        table.add_row(a["account"], a["test"], str(a["asked"]), str(a["matches"]), f"{a['innocent_rate']:.4f}",
                      f"{a['p_value']:.3g}", "yes" if a["stolen"] else "no")  # fmt: skip
    console.print(table)


@app.command()
def secret(
    out: Annotated[Path, typer.Argument(help="The secret file to write (never overwritten), e.g. runs/wm.key.")],
    victim: Annotated[
        Path | None, typer.Option(help="Choose a watermark secret of low benign cost on this run's training images.")
    ] = None,
    rate: Annotated[float, typer.Option(help="--victim: the watermark rate the secret is for.")] = 0.005,
    attempts: Annotated[int, typer.Option(help="--victim: secrets to draw at most.")] = 200,
    data_root: Annotated[Path | None, typer.Option(help="Where the dataset's files are.")] = None,
):
    """Write a new server secret (32 random bytes, 0600) for --watermark, watermark or scramble.
    With --victim, for a watermark: the first secret whose marks change the top-1 of at most
    RATE x accuracy of 20,000 of the victim's own training images (never the test set)."""
    import os

    from divqat.defenses.watermark_key import choose_secret, write_secret

    if out.exists():
        raise DivqatError(f"{out} exists: a secret is never overwritten (its records would not verify)")
    if victim is None:
        write_secret(out, os.urandom(32))
        console.print(f"secret written to {out}")
        return
    import torch

    from divqat import artifacts
    from divqat.blackbox import load_backend
    from divqat.data import load_splits

    config, _ = artifacts.load_config(victim)
    own = load_splits(config.dataset, data_root).victim_train
    images, labels = own.images[:20_000], own.labels[:20_000]
    answer = load_backend(victim, "onnx")
    probs = torch.cat([answer(batch) for batch in images.split(2048)])
    chosen, cost, tried = choose_secret(rate, probs, images, labels, attempts)
    write_secret(out, chosen)
    console.print(f"secret written to {out}: its watermark at rate {rate:g} changes the top-1 of {100 * cost:.3f} % "
                  f"of {len(images)} of the victim's training images (secret {tried} of {attempts} drawn)")  # fmt: skip


def load_records(db: Path | None, keys: list[str], files: list[Path], key_secret: Path | None = None) -> dict:
    """Each account's record: keys of a served database (all, or those named), and grid records."""
    from divqat.defenses.watermark import Record

    if db is None and not files:
        raise DivqatError("give --db (a served model's key database) or --record (a grid's watermark record)")
    if keys and db is None:
        raise DivqatError("--key names accounts of --db")
    records = {str(path): Record.load(path) for path in files}
    if db is not None:
        from divqat.serve import watermarks
        from divqat.serve.keys import KeyStore

        store = KeyStore(db, create=False, secret_file=key_secret)
        chosen = [store.find(k) for k in keys] if keys else store.all()
        con = store.connection()
        records |= {k.id: watermarks.load(con, k.rowid) for k in chosen}
    return records


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
        str, typer.Option(help="local (this machine) or ray (a Ray cluster: pip install -e '.\\[ray]').")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="--executor ray: the cluster, auto or HOST:PORT (default: Ray on this machine).")
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
    from divqat.configs import METHODS
    from divqat.data import DATASETS
    from divqat.data.outliers import OUTLIERS
    from divqat.data.pools import POOLS
    from divqat.defenses import DEFENSES
    from divqat.models import MODELS
    from divqat.train import DIVERGENCES
    from divqat.train.outlier_losses import OUTLIER_LOSSES

    registries = {
        "datasets": DATASETS, "models": MODELS, "methods": METHODS, "presets": PRESETS, "divergences": DIVERGENCES,
        "outlier losses": OUTLIER_LOSSES, "outlier sources": OUTLIERS, "query pools": POOLS, "attacks": ATTACKS,
        "defenses": DEFENSES,
    }  # fmt: skip
    for name, items in registries.items():
        shown = [with_parameters(n, e) for n, e in items.items()] if name in ("attacks", "defenses") else items
        console.print(f"{name}: {', '.join(shown)}")


def with_parameters(name: str, cls) -> str:
    """An attack or defense with its parameters and their defaults: `jbda(seed_size=100, step=0.1, ...)`."""
    fields = [f"{f.name}={f.default}" for f in dataclasses.fields(cls) if f.init and f.default != dataclasses.MISSING]
    return f"{name}({', '.join(fields)})" if fields else name


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
