"""`divqat serve` and `divqat keys add|list|revoke`. FastAPI and uvicorn are imported inside the
commands, so `divqat --help` does not pay for them."""

import json
import secrets
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from divqat.cli_options import DefenseOption, DefenseParamOption
from divqat.errors import DivqatError
from divqat.ui import console

DEFAULT_DB = Path("serve.db")
DbOption = Annotated[Path, typer.Option("--db", help="The key database (SQLite, created on first use).")]


def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `divqat train` (its model.onnx).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (printed).")] = 8000,
    keys: Annotated[
        Path | None, typer.Option(help="YAML list of {key, budget, output} to add or update at start.")
    ] = None,
    db: DbOption = DEFAULT_DB,
    defense: DefenseOption = None,
    defense_param: DefenseParamOption = None,
    data_root: Annotated[
        Path | None, typer.Option(help="The victim's dataset, for defenses that train a model (mad, ...).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the defenses that draw random numbers or train.")] = 0,
    watermark: Annotated[
        float | None,
        typer.Option(help="Watermark this fraction of answers (e.g. 0.005) and record them per key (divqat verify)."),
    ] = None,
    secret_file: Annotated[
        Path | None, typer.Option(help="--watermark: the server's secret, a file of at least 16 random bytes.")
    ] = None,
    prada: Annotated[bool, typer.Option(help="PRADA extraction detection per key.")] = False,
    prada_delta: Annotated[
        float | None, typer.Option(help="Flag a key when Shapiro-Wilk's W < this [default: 0.93, docs/serving.md].")
    ] = None,
    prada_block: Annotated[bool, typer.Option(help="Refuse (403) keys PRADA has flagged.")] = False,
    max_batch: Annotated[int, typer.Option(help="Images per request at most.")] = 1024,
    max_body_mb: Annotated[float, typer.Option(help="Request body size limit, MiB.")] = 32.0,
    threads: Annotated[
        int,
        typer.Option(help="onnxruntime threads per request; 0: one per core. Concurrent requests fill the cores."),
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
):
    """Serve a run's deployed model over HTTP: keys, budgets, defenses, PRADA (docs at /docs)."""
    from divqat.serve.payload import Limits

    if max_batch < 1 or max_body_mb * 2**20 < 1024:
        raise DivqatError("--max-batch must be >= 1 and --max-body-mb at least 0.001")
    if (prada_delta is not None or prada_block) and not prada:
        raise DivqatError("--prada-delta and --prada-block need --prada")
    if not run_dir.is_dir():
        raise DivqatError(f"{run_dir} is not a directory")
    specs = load_keys(keys)
    config = prada_config(prada_delta) if prada else None
    defenses = build_defenses(run_dir, defense or [], defense_param or [], data_root, seed)
    if watermark is not None or secret_file is not None:
        from divqat.defenses.chain import check_watermark_last

        defenses = (*defenses, watermark_defense(watermark, secret_file))
        check_watermark_last(defenses)
    listener = listen(host, port)
    import uvicorn

    from divqat.serve.app import create_app

    app = create_app(
        run_dir, db, defenses, keys=specs, limits=Limits(max_batch, int(max_body_mb * 2**20)), prada=config,
        block_flagged=prada_block, threads=threads,
    )  # fmt: skip
    service = app.state.service
    bound_host, bound_port = listener.getsockname()[:2]
    bound_host = f"[{bound_host}]" if ":" in bound_host else bound_host  # IPv6 in a URL
    console.print(
        f"serving {run_dir} at http://{bound_host}:{bound_port} (docs: /docs; keys: {db}, "
        f"{len(service.store.all())} known; defenses: {', '.join(d.name for d in defenses) or 'none'}; "
        f"PRADA: {f'delta {config.delta}' if config else 'off'})",
        soft_wrap=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=access_log, timeout_graceful_shutdown=5)
    )
    server.run(sockets=[listener])


def listen(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn: a busy port is a one-line error, and port 0 works."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as e:
        raise DivqatError(f"cannot listen on {host}:{port} ({e})") from None
    return sock


def load_keys(path: Path | None):
    from divqat.serve.keys import load_keys_file

    return load_keys_file(path) if path is not None else []


def prada_config(delta: float | None):
    from divqat.serve.prada import PradaConfig

    try:
        return PradaConfig() if delta is None else PradaConfig(delta=delta)
    except ValueError as e:
        raise DivqatError(f"--prada-delta: {e}") from None


def build_defenses(run_dir: Path, names: list[str], pairs: list[str], data_root: Path | None, seed: int) -> tuple:
    """Defenses as `divqat attack` builds them (defenses/chain.py); those with a model of their
    own are fitted on the victim's dataset here, at start-up."""
    from divqat.defenses import Defense
    from divqat.defenses.chain import build_chain, parse_params

    defenses = build_chain(names, parse_params(pairs), seed=seed)
    if not defenses:
        return ()
    needing_data = [d for d in defenses if type(d).fit is not Defense.fit]
    if needing_data:
        import torch

        from divqat.data import load_splits
        from divqat.serve.model import load_served_model

        dataset = read_dataset_name(run_dir)
        try:
            splits = load_splits(dataset, data_root)
        except DivqatError as e:
            names = ", ".join(d.name for d in needing_data)
            raise DivqatError(f"defense {names} needs the victim's {dataset} data: {e}") from None
        model = load_served_model(run_dir)

        def backend(images):
            return torch.from_numpy(model.predict_proba(images.numpy()))

        for d in needing_data:
            d.fit(backend, splits)
    return defenses


def watermark_defense(rate: float | None, secret_file: Path | None):
    """The watermark last in the chain, so that what it records is what the key receives."""
    if rate is None or secret_file is None:
        raise DivqatError("--watermark RATE and --secret-file FILE go together")
    from divqat.defenses import create_defense

    return create_defense("watermark", {"rate": rate, "secret_file": str(secret_file)})


def read_dataset_name(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "config.json").read_text())["victim"]["dataset"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DivqatError(f"{run_dir}/config.json: cannot read the victim's dataset ({e})") from None


def keys_add(
    budget: Annotated[int, typer.Option(help="Queries (images) the key may make in all.")],
    output: Annotated[str, typer.Option(help="probabilities, top-k:K or label.")] = "probabilities",
    key: Annotated[str | None, typer.Option(help="The key; a random one is made (and printed) if absent.")] = None,
    db: DbOption = DEFAULT_DB,
):
    """Add a key with its budget and output mode."""
    from divqat.serve.keys import KeySpec, KeyStore, check_budget, check_key
    from divqat.wire import parse_output_mode

    made = key is None
    key = secrets.token_urlsafe(24) if made else check_key(key)
    added = KeyStore(db).add(KeySpec(key, check_budget(budget), parse_output_mode(output)))
    if made:
        print(key)  # stdout, alone: `KEY=$(divqat keys add ...)` works
    console.print(f"key {added.id} added to {db}: budget {added.budget}, output {added.output}")


def keys_list(db: DbOption = DEFAULT_DB):
    """Every key: id, budget, used, remaining, output mode, when created, revoked, flagged."""
    from divqat.serve.keys import KeyStore

    table = Table(title=str(db))
    for column in ("id", "budget", "used", "remaining", "output", "created", "revoked", "flagged"):
        table.add_column(column, justify="right" if column in ("budget", "used", "remaining") else "left")
    for k in KeyStore(db, create=False).all():
        row = (k.id, k.budget, k.used, k.remaining, k.output, k.created, k.revoked or "", k.flagged or "")
        table.add_row(*map(str, row))
    Console(stderr=True, width=max(console.width, 150)).print(table)  # ids and dates whole, even in a pipe


def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key, or its id (as `divqat keys list` shows it).")],
    db: DbOption = DEFAULT_DB,
):
    """Revoke a key: its requests are refused (403) from now on; its count is kept."""
    from divqat.serve.keys import KeyStore

    revoked = KeyStore(db, create=False).revoke(key)
    console.print(f"key {revoked.id} revoked ({revoked.used} of {revoked.budget} queries used)")


def register(app: typer.Typer) -> None:
    """Add `serve` and `keys` to the `divqat` command line."""
    app.command()(serve)
    keys = typer.Typer(no_args_is_help=True, help="Manage the API keys of `divqat serve` (SQLite at --db).")
    keys.command("add")(keys_add)
    keys.command("list")(keys_list)
    keys.command("revoke")(keys_revoke)
    app.add_typer(keys, name="keys")
