"""`divqat serve` and `divqat keys add|list|revoke`. FastAPI and uvicorn are imported inside the
commands, so `divqat --help` does not pay for them."""

import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from divqat.cli_options import DefenseOption, DefenseParamOption
from divqat.errors import DivqatError
from divqat.ui import console

DEFAULT_DB = "serve.db"
DbOption = Annotated[
    str, typer.Option("--db", help="The key database: an SQLite file (created on first use) or postgresql://...")
]
WATERMARK_PARAM_HELP = (
    "--watermark: another setting of the watermark defense as key=value, repeatable (e.g. unsure_below=0.5; "
    "an unknown key's error names them all; docs/divqat.md)."
)
KeySecretOption = Annotated[
    Path | None,
    typer.Option(help="The key secret keys are hashed with (default: DB.secret beside an SQLite DB, made 0600)."),
]


def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `divqat train` (its model.onnx).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (printed).")] = 8000,
    keys: Annotated[
        Path | None,
        typer.Option(help="YAML list of {key, budget, output} to declare at start (as `divqat keys import`)."),
    ] = None,
    db: DbOption = DEFAULT_DB,
    key_secret: KeySecretOption = None,
    workers: Annotated[int, typer.Option(help="Server processes sharing the port and the database.")] = 1,
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
    watermark_param: Annotated[list[str] | None, typer.Option(help=WATERMARK_PARAM_HELP)] = None,
    prada: Annotated[bool, typer.Option(help="PRADA extraction detection per key.")] = False,
    prada_delta: Annotated[
        float | None, typer.Option(help="Flag a key when Shapiro-Wilk's W < this (default: 0.93, docs/serving.md).")
    ] = None,
    prada_block: Annotated[bool, typer.Option(help="Refuse (403) keys PRADA has flagged.")] = False,
    max_batch: Annotated[int, typer.Option(help="Images per request at most.")] = 1024,
    max_body_mb: Annotated[float, typer.Option(help="Request body size limit, MiB.")] = 32.0,
    rate_requests: Annotated[float, typer.Option(help="Requests per second per key (0: no limit).")] = 200.0,
    rate_images: Annotated[float, typer.Option(help="Images per second per key (0: no limit).")] = 20_000.0,
    max_connections: Annotated[int, typer.Option(help="Open connections per worker; more get a 503.")] = 256,
    threads: Annotated[
        int,
        typer.Option(help="onnxruntime threads per request; concurrent requests fill the cores (docs/serving.md)."),
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request (key id, status, images, ms).")] = True,
):
    """Serve a run's deployed model over HTTP: keys, budgets, defenses, PRADA (docs at /docs)."""
    from divqat.serve.payload import Limits
    from divqat.serve.ratelimit import RateLimit
    from divqat.serve.worker import ServeSettings, watermark_params

    if max_batch < 1 or max_body_mb * 2**20 < 1024:
        raise DivqatError("--max-batch must be >= 1 and --max-body-mb at least 0.001")
    if workers < 1 or max_connections < 1 or threads < 0:
        raise DivqatError("--workers and --max-connections must be >= 1, --threads >= 0")
    if (prada_delta is not None or prada_block) and not prada:
        raise DivqatError("--prada-delta and --prada-block need --prada")
    if not run_dir.is_dir():
        raise DivqatError(f"{run_dir} is not a directory")
    if (watermark is None) != (secret_file is None):
        raise DivqatError("--watermark RATE and --secret-file FILE go together")
    try:
        rate = RateLimit(rate_requests, rate_images)
    except ValueError as e:
        raise DivqatError(f"--rate-requests/--rate-images: {e}") from None
    specs = load_keys(keys)
    config = prada_config(prada_delta) if prada else None
    settings = ServeSettings(
        run_dir=str(run_dir), db=str(db), key_secret=str(key_secret) if key_secret else None,
        defenses=tuple(defense or ()), defense_params=tuple(defense_param or ()),
        data_root=str(data_root) if data_root else None, seed=seed, watermark=watermark,
        watermark_params=tuple(watermark_param or ()),
        secret_file=str(secret_file) if secret_file else None, prada_delta=config.delta if config else None,
        prada_block=prada_block, max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
        rate_requests=rate.share(workers).requests_per_s, rate_images=rate.share(workers).images_per_s,
        threads=threads,
    )  # fmt: skip
    Limits(settings.max_batch, settings.max_body_bytes)
    watermark_params(settings)  # misuse fails before the store is made; keys and values when the defense is built
    from divqat.serve.keys import KeyStore

    store = KeyStore(db, secret_file=key_secret)
    for dropped in store.declare(specs) if specs else ():
        console.print(f"key {dropped.id} revoked: {keys} no longer lists it")
    known = len(store.all())
    # Everything built here, before binding, so that an error is one line: one worker serves this
    # very app (defenses that train a model train once); several build their own, so the parent
    # only checks.
    app = settings.app() if workers == 1 else settings.check()
    listener = listen(host, port)
    bound_host, bound_port = listener.getsockname()[:2]
    bound_host = f"[{bound_host}]" if ":" in bound_host else bound_host  # IPv6 in a URL
    names = [*settings.defenses, *(["watermark"] if watermark is not None else [])]
    console.print(
        f"serving {run_dir} at http://{bound_host}:{bound_port} (docs: /docs; keys: {store.db}, {known} known; "
        f"defenses: {', '.join(names) or 'none'}; PRADA: {f'delta {config.delta}' if config else 'off'}; "
        f"{workers} worker{'s' * (workers > 1)} x {settings.threads} thread{'s' * (settings.threads > 1)})",
        soft_wrap=True,
    )
    from divqat.serve.worker import run

    run(settings, listener, workers=workers, max_connections=max_connections, access_log=access_log, app=app)


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


def store_of(db: str, key_secret: Path | None, create: bool = True):
    from divqat.serve.keys import KeyStore

    return KeyStore(db, create=create, secret_file=key_secret)


def keys_add(
    budget: Annotated[int, typer.Option(help="Queries (images) the key may make in all.")],
    output: Annotated[str, typer.Option(help="probabilities, top-k:K or label.")] = "probabilities",
    key: Annotated[
        str | None, typer.Option(help="The key (32+ characters); a random one is made and printed if absent.")
    ] = None,
    db: DbOption = DEFAULT_DB,
    key_secret: KeySecretOption = None,
):
    """Add a key with its budget and output mode; a generated key is printed alone on stdout."""
    from divqat.serve.keys import KeySpec, check_budget, check_key, new_key
    from divqat.wire import parse_output_mode

    made = key is None
    key = new_key() if made else check_key(key)
    spec = KeySpec(key, check_budget(budget), parse_output_mode(output))
    added = store_of(db, key_secret).add(spec)
    if made:
        print(key)  # stdout, alone: `KEY=$(divqat keys add ...)` works
    console.print(f"key {added.id} added to {db}: budget {added.budget}, output {added.output}")


def keys_import(
    file: Annotated[Path, typer.Argument(help="A YAML list of {key, budget, output}.")],
    db: DbOption = DEFAULT_DB,
    key_secret: KeySecretOption = None,
):
    """Declare a keys file: its keys added or updated (counts kept), and the keys an earlier
    file declared that this one dropped revoked. The file is not needed afterwards."""
    from divqat.serve.keys import load_keys_file

    store = store_of(db, key_secret)
    specs = load_keys_file(file)
    dropped = store.declare(specs)
    for k in dropped:
        console.print(f"key {k.id} revoked: {file} no longer lists it")
    console.print(f"{len(specs)} keys declared from {file} into {db}; {len(dropped)} revoked")


def keys_list(db: DbOption = DEFAULT_DB, key_secret: KeySecretOption = None):
    """Every key: id, budget, used, remaining, output mode, origin, when created, revoked, flagged."""
    table = Table(title=str(db))
    columns = ("id", "budget", "used", "remaining", "output", "origin", "created", "revoked", "flagged")
    for column in columns:
        table.add_column(column, justify="right" if column in ("budget", "used", "remaining") else "left")
    for k in store_of(db, key_secret, create=False).all():
        row = (k.id, k.budget, k.used, k.remaining, k.output, k.origin, k.created, k.revoked or "", k.flagged or "")
        table.add_row(*map(str, row))
    Console(stderr=True, width=max(console.width, 170)).print(table)  # ids and dates whole, even in a pipe


def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key, or its id (as `divqat keys list` shows it).")],
    db: DbOption = DEFAULT_DB,
    key_secret: KeySecretOption = None,
):
    """Revoke a key: its requests are refused (403) from now on; its count and watermark record
    are kept, its PRADA state purged."""
    revoked = store_of(db, key_secret, create=False).revoke(key)
    console.print(f"key {revoked.id} revoked ({revoked.used} of {revoked.budget} queries used)")


def keys_set(
    key: Annotated[str, typer.Argument(help="The key, or its id (as `divqat keys list` shows it).")],
    budget: Annotated[int | None, typer.Option(help="The key's new budget, in queries in all.")] = None,
    output: Annotated[str | None, typer.Option(help="Its new output mode: probabilities, top-k:K or label.")] = None,
    clear_flag: Annotated[bool, typer.Option(help="Clear PRADA's flag (and restart its PRADA state).")] = False,
    db: DbOption = DEFAULT_DB,
    key_secret: KeySecretOption = None,
):
    """Change a key's budget or output mode, or clear its flag; its count is kept."""
    if budget is None and output is None and not clear_flag:
        raise DivqatError("nothing to change: give --budget, --output or --clear-flag")
    changed = store_of(db, key_secret, create=False).update(key, budget, output, clear_flag)
    flag = f", flagged {changed.flagged}" if changed.flagged else ""
    console.print(f"key {changed.id}: budget {changed.budget} ({changed.used} used), output {changed.output}{flag}")


def register(app: typer.Typer) -> None:
    """Add `serve` and `keys` to the `divqat` command line."""
    app.command()(serve)
    keys = typer.Typer(no_args_is_help=True, help="Manage the API keys of `divqat serve` (the store at --db).")
    keys.command("add")(keys_add)
    keys.command("import")(keys_import)
    keys.command("list")(keys_list)
    keys.command("set")(keys_set)
    keys.command("revoke")(keys_revoke)
    app.add_typer(keys, name="keys")
