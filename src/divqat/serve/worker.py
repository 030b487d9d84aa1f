"""A server process: its settings, the app they make, and `run` for one or several workers.

`divqat serve` checks everything once (keys declared, defenses built, model loaded) and binds
the port, then `run` serves it in this process, or with `--workers N` starts N processes
(uvicorn's supervisor, spawned, not forked: onnxruntime's and torch's threads do not survive a
fork) that share the listening socket and the database, each building its own app from the
same `ServeSettings` (passed in the environment as JSON). The kernel spreads connections over
the workers; budgets stay exact because every spend is one conditional UPDATE in the shared
database, and PRADA's state is reloaded by a worker only when another has moved it on.
"""

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from divqat.errors import DivqatError

SETTINGS_ENV = "DIVQAT_SERVE_SETTINGS"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"


@dataclass(frozen=True)
class ServeSettings:
    """Everything a worker needs to build the app (strings and numbers: it travels as JSON)."""

    run_dir: str
    db: str
    key_secret: str | None = None
    defenses: tuple[str, ...] = ()
    defense_params: tuple[str, ...] = ()
    data_root: str | None = None
    seed: int = 0
    watermark: float | None = None
    watermark_params: tuple[str, ...] = ()  # key=value for the watermark defense's other settings
    secret_file: str | None = None
    prada_delta: float | None = None
    prada_block: bool = False
    max_batch: int = 1024
    max_body_bytes: int = 32 * 2**20
    rate_requests: float = 200.0
    rate_images: float = 20_000.0
    threads: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        fields = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def check(self) -> None:
        """Build what the app needs once, so that a bad setting is a one-line error before binding."""
        build_defenses_of(self)
        from divqat.serve.model import load_served_model

        load_served_model(Path(self.run_dir), 1)

    def app(self):
        from divqat.serve.app import create_app
        from divqat.serve.payload import Limits
        from divqat.serve.prada import PradaConfig
        from divqat.serve.ratelimit import RateLimit

        return create_app(
            Path(self.run_dir), self.db, build_defenses_of(self), limits=Limits(self.max_batch, self.max_body_bytes),
            prada=PradaConfig(delta=self.prada_delta) if self.prada_delta is not None else None,
            block_flagged=self.prada_block, threads=self.threads, rate=RateLimit(self.rate_requests, self.rate_images),
            key_secret=Path(self.key_secret) if self.key_secret else None,
        )  # fmt: skip


def app_from_environment():
    """uvicorn's factory in each worker process."""
    return ServeSettings.from_json(os.environ[SETTINGS_ENV]).app()


def log_config(access_log: bool) -> dict:
    """One line per event, with time and level, for the app's loggers and uvicorn's."""
    handler = {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": LOG_FORMAT}},
        "handlers": {"stderr": handler},
        "loggers": {
            "divqat.serve": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "divqat.serve.access": {"level": "INFO" if access_log else "WARNING"},
            "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "uvicorn.error": {"level": "WARNING"},
        },
    }


def uvicorn_config(app, max_connections: int, access_log: bool, workers: int = 1):
    import uvicorn

    from divqat.serve.protocol import GuardedHttpToolsProtocol

    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        http=GuardedHttpToolsProtocol,
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        access_log=False,  # ours (serve/app.py AccessLog) says which key and how many images
        log_config=log_config(access_log),
        log_level="warning",
        server_header=False,
    )


def run(
    settings: ServeSettings, listener: socket.socket, *, workers: int, max_connections: int, access_log: bool, app=None
):
    """Serve `app` (or the settings' app) in this process, or `workers` processes of it."""
    import uvicorn

    if workers == 1:
        config = uvicorn_config(app or settings.app(), max_connections, access_log)  # it configures logging too
        uvicorn.Server(config).run(sockets=[listener])
        return
    from uvicorn.supervisors import Multiprocess

    os.environ[SETTINGS_ENV] = settings.to_json()
    config = uvicorn_config("divqat.serve.worker:app_from_environment", max_connections, access_log, workers)
    Multiprocess(config, sockets=[listener]).run()


def build_defenses_of(settings: ServeSettings) -> tuple:
    params = watermark_params(settings)
    defenses = build_defenses(
        Path(settings.run_dir), list(settings.defenses), list(settings.defense_params),
        Path(settings.data_root) if settings.data_root else None, settings.seed,
    )  # fmt: skip
    if settings.watermark is not None:
        from divqat.defenses.chain import check_watermark_last

        defenses = (*defenses, watermark_defense(settings.watermark, Path(settings.secret_file), params))
        check_watermark_last(defenses)
    return defenses


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


# The watermark's settings that have options of their own; --watermark-param takes the others.
WATERMARK_OPTIONS = {"rate": "--watermark", "secret_file": "--secret-file"}


def watermark_params(settings: ServeSettings) -> dict[str, str]:
    """--watermark-param's pairs, as strings: the Watermark defense checks keys and values when built."""
    from divqat.defenses.chain import parse_params

    if settings.watermark_params and settings.watermark is None:
        raise DivqatError("--watermark-param needs --watermark")
    params = parse_params(list(settings.watermark_params), option="--watermark-param")
    own = [key for key in WATERMARK_OPTIONS if key in params]
    if own:
        raise DivqatError(f"--watermark-param {own[0]}: give it as {WATERMARK_OPTIONS[own[0]]}")
    return params


def watermark_defense(rate: float | None, secret_file: Path | None, params: dict | None = None):
    """The watermark last in the chain, so that what it records is what the key receives."""
    from divqat.defenses import create_defense

    return create_defense("watermark", {"rate": rate, "secret_file": str(secret_file), **(params or {})})


def read_dataset_name(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "config.json").read_text())["victim"]["dataset"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DivqatError(f"{run_dir}/config.json: cannot read the victim's dataset ({e})") from None


class Served:
    """A server running in a thread of this process (`serve_in_thread`): its `url`; `stop()`
    (or leaving a `with` block) shuts it down and frees the port."""

    def __init__(self, server, thread, listener: socket.socket, host: str):
        self.server, self.thread, self.listener = server, thread, listener
        port = listener.getsockname()[1]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.listener.close()

    def __enter__(self) -> "Served":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_in_thread(app, listener: socket.socket, *, max_connections: int = 256, access_log: bool = True) -> Served:
    """`app` served as `divqat serve` serves it (the guarded protocol, limits, logging) from a
    daemon thread on `listener`, once it accepts connections."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, max_connections, access_log))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise DivqatError("the server did not start")
        time.sleep(0.01)
    return Served(server, thread, listener, listener.getsockname()[0])
