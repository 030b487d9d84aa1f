"""divqat from Python, without the command line: your model, your tensors, the same pipeline.

    import torch
    from divqat import api

    data = api.dataset(train_images, train_labels, test_images, test_labels)  # float32 NCHW in [0, 1]
    victim = api.train_victim(MyNet(), data, "runs/mine")  # outlier-aware DivQAT; preset="paper": the paper's
    victim.predict_proba(test_images[:8]), victim.metrics, victim.onnx  # or victim = api.load("runs/mine")
    thief = api.attack("knockoff", budget=5000, surrogate="cnn")  # AttackConfig fields, the attack's own
    surrogate = thief.extract(victim, "photos", data=data)  # a pool's name, or your images
    scores = api.evaluate(surrogate, data, victim=victim)  # accuracy, fidelity, extraction ratio
    result, _ = api.steal(victim, data, budget=5000, defenses=[api.defense("reverse-sigmoid", beta=0.2)])

`train_victim` runs FP training, QAT or DivQAT, int8 conversion and ONNX export exactly as
`divqat train` does, writes the same run directory and returns it as a `Victim`. An attack
(`attack`) steals from a victim in any form - a `Victim`, a run directory, an ONNX file, a
served model (`remote(url, key)`) or any `images -> probabilities` callable - behind any chain
of post-hoc defenses; `evaluate` measures what it took, apart; `steal` does both, as `divqat
attack` does. A model passed as an `nn.Module` takes raw [0, 1] pixels (normalise inside it)
and must be PT2E-exportable; register its builder with `register_model` to reload it by name
later (`divqat --plugin`). Every registration hook is exported here.
"""

from pathlib import Path

import torch
from torch import nn

from divqat import files, pipeline
from divqat.attacks import Attack, Thief, register_attack
from divqat.blackbox import load_backend
from divqat.blackbox.backends import as_backend
from divqat.configs import OWN_MODELS, AttackConfig, attack_params, field_names, victim_config
from divqat.data import ImageSet, Splits, register_dataset
from divqat.data.outliers import register_outliers
from divqat.data.pools import query_pool, register_pool
from divqat.data.splits import THIEF_POOL_FRACTION, split
from divqat.defenses import Defense, create_defense, register_defense
from divqat.defenses.watermark import Record
from divqat.errors import DivqatError
from divqat.extraction import evaluate as evaluate_clone
from divqat.extraction import extract, thief_pool
from divqat.extraction import steal as steal_and_measure
from divqat.models import register_model
from divqat.quant import OnnxModel

__all__ = [
    "Extraction", "Victim", "attack", "dataset", "defense", "evaluate", "load", "remote", "steal", "train_victim",
    "verify",
    # Your own entries, registered by name (from a plugin: `divqat --plugin FILE`, `plugins:` in a grid):
    "Attack", "Defense", "Thief", "register_attack", "register_dataset", "register_defense", "register_model",
    "register_outliers", "register_pool",
]  # fmt: skip


class Victim:
    """A trained victim: its run directory, what `train_victim` and `load` return.

    `predict_proba(images)` answers as the deployed model does (its ONNX file in onnxruntime:
    float32 NCHW pixels in [0, 1] -> probabilities); calling the victim does the same. `onnx` is
    that file (it runs without divqat), `metrics` its metrics.json, `config` its config.json,
    `app(db, ...)` the HTTP API of `divqat serve` for it. A Victim is also a path (os.fspath),
    so anything that takes a run directory takes it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._answer = None

    def __fspath__(self) -> str:
        return str(self.run_dir)

    def __repr__(self) -> str:
        return f"Victim({str(self.run_dir)!r})"

    def __str__(self) -> str:
        return str(self.run_dir)

    def __truediv__(self, name: str) -> Path:
        return self.run_dir / name

    @property
    def onnx(self) -> Path:
        return self.run_dir / "model.onnx"

    @property
    def metrics(self) -> dict:
        return files.read_json(self.run_dir / "metrics.json")

    @property
    def config(self) -> dict:
        return files.read_json(self.run_dir / "config.json")

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        if self._answer is None:
            self._answer = load_backend(self.run_dir, "onnx")
        return self._answer(images)

    __call__ = predict_proba

    def app(self, db: str | Path, defenses=(), *, keys=(), **options):
        """The FastAPI app `divqat serve` runs for this victim (serve/app.py's create_app
        options: limits, prada, rate, key_secret, ...); `keys`: {key: budget} (probability
        answers) or the serve module's KeySpecs, declared in the key store `db` (SQLite file or
        postgresql:// URL)."""
        from divqat.serve.app import create_app
        from divqat.serve.keys import KeySpec
        from divqat.wire import parse_output_mode

        if isinstance(keys, dict):
            keys = [KeySpec(k, int(budget), parse_output_mode("probabilities")) for k, budget in keys.items()]
        return create_app(self.run_dir, str(db), tuple(defenses), keys=tuple(keys), **options)

    def serve(self, db: str | Path, *, host: str = "127.0.0.1", port: int = 8000, background: bool = False,
              defenses=(), keys=(), **options):  # fmt: skip
        """Serve it as `divqat serve` does (one worker): until interrupted, or with
        `background=True` from a thread, returning a handle with `url` and `stop()` (also a
        context manager); port 0 picks a free one."""
        from divqat.serve.cli import listen
        from divqat.serve.worker import serve_in_thread

        served = serve_in_thread(self.app(db, defenses, keys=keys, **options), listen(host, port))
        if background:
            return served
        try:
            served.thread.join()
        finally:
            served.stop()


def load(run_dir: str | Path) -> Victim:
    """A victim from its run directory (one that `divqat train` or `train_victim` wrote)."""
    run = Path(run_dir)
    if not (run / "model.onnx").is_file():
        raise DivqatError(f"{run} has no model.onnx: not a divqat run directory")
    return Victim(run)


def remote(url: str, key: str):
    """A served victim (`divqat serve`), queried with `key`: its budget and output mode are the
    server's. A callable `steal` and `verify` accept."""
    from divqat.blackbox.http import HttpBackend

    return HttpBackend(url, key)


def dataset(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    name: str = "custom",
    thief_fraction: float = THIEF_POOL_FRACTION,
) -> Splits:
    """Your tensors as divqat's splits: the training images are split (fixed seed) into the
    victim's training set and a disjoint thief's split, as for the built-in datasets."""
    train, test = ImageSet(train_images.float(), train_labels.long()), ImageSet(test_images.float(), test_labels.long())
    if train.images.min() < 0 or train.images.max() > 1:
        raise DivqatError("images must be float32 pixels in [0, 1] (NCHW)")
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    return split(train, test, name, num_classes, thief_fraction)


def train_victim(
    model: nn.Module | str, data: Splits, out: str | Path, *, preset: str | None = None, overwrite: bool = False,
    **config,
) -> Victim:  # fmt: skip
    """Train a victim (FP, then the `method`: ptq, qat or divqat - by default outlier-aware
    DivQAT, the setting that protects) and write its run directory `out` (model.onnx, weights,
    metrics.json), returned as a `Victim`. Keyword arguments are VictimConfig fields
    (divqat/configs.py); `preset` ("paper", "bounded") names an objective under them."""
    name = model if isinstance(model, str) else type(model).__name__
    if not isinstance(model, str):
        OWN_MODELS.add(name)
    settings = victim_config(preset, dataset=data.dataset, model=name, **config)
    module = None if isinstance(model, str) else model
    pipeline.train(settings, Path(out), splits=data, model=module, overwrite=overwrite)
    return Victim(out)


def defense(name: str, **params) -> Defense:
    """A post-hoc defense of the registry, e.g. defense("mad", epsilon=0.5)."""
    return create_defense(name, params)


class Extraction:
    """An attack with its settings, as an ART user holds one: `extract(victim, pool)` steals a
    surrogate from any form of a victim and returns it; `books` then holds what it cost
    (queries, seconds), `record` what a watermark told it. Made by `attack(name, ...)`."""

    def __init__(self, config: AttackConfig):
        self.config, self.books, self.record = config, {}, Record()

    def __repr__(self) -> str:
        return f"Extraction({self.config.attack!r}, budget={self.config.budget}, params={self.config.params})"

    def extract(
        self,
        victim,
        pool: str | torch.Tensor | None = None,
        *,
        surrogate: nn.Module | None = None,
        defenses: list[Defense] = (),
        data: Splits | None = None,
        num_classes: int | None = None,
    ) -> nn.Module:
        """Steal `victim` (a Victim, a run directory, an ONNX file, `remote(url, key)` or any
        `images -> probabilities` callable) from `pool`: the thief's own images (float32 NCHW
        in [0, 1]), or a registered pool's name (needs `data`); default the config's pool (needs
        `data`; DFME needs none). `surrogate`: your own module (raw pixels in; a copy is
        trained), else the config's architecture. `defenses` stand in front of the victim;
        those that train a model of their own (MAD) are fit on `data`. The number of classes
        comes from `num_classes`, `data` or the victim's ONNX file."""
        answer = as_backend(victim)
        named = isinstance(pool, str) or (pool is None and self.config.attack != "dfme")
        if data is None and (named or self.config.in_seeds):
            raise DivqatError("a named pool, the config's pool and in_seeds need data= (the victim's splits)")
        images = query_pool(pool, data).images if isinstance(pool, str) else pool
        if data is not None:
            images = thief_pool(self.config, data, images)
        for d in defenses:
            if data is not None:
                d.fit(answer, data)
            elif d.needs_data:
                raise DivqatError(f"defense {d.name!r} trains a model of its own on the victim's data: pass data=")
        shape, classes = input_shape_of(victim, images, data), num_classes or classes_of(victim, data)
        self.record = Record()
        stolen, self.books = extract(answer, self.config, images, shape, classes, defenses=tuple(defenses),
                                     surrogate=surrogate, record=self.record)  # fmt: skip
        return stolen


def attack(name: str = "knockoff", **settings) -> Extraction:
    """An attack with its settings: keyword arguments are AttackConfig fields (budget, labels,
    surrogate, epochs, lr, schedule, seed, the adaptive options) and the attack's own parameters
    (`divqat list` shows them: attack("jbda", budget=2000, step=0.2))."""
    name = settings.pop("attack", name)
    own = {k: settings.pop(k) for k in list(settings) if k not in field_names(AttackConfig)}
    params = {**attack_params(settings.pop("params", {})), **own}
    return Extraction(AttackConfig(attack=name, params=params, **settings))


def evaluate(surrogate: nn.Module, test, victim=None, defenses: list[Defense] = ()) -> dict:
    """A stolen model measured on labelled images, apart from any theft: `test` is an ImageSet,
    divqat splits (their test set) or (images, labels). Its accuracy; with `victim` (any form),
    also the victim's, the clone's fidelity (top-1 agreement) and the extraction ratio, with the
    defenses' cost when `defenses` are given. The victim answers outside any budget."""
    if isinstance(test, Splits):
        test = test.test
    elif isinstance(test, tuple | list):
        test = ImageSet(*test)
    answer = None if victim is None else as_backend(victim)
    return evaluate_clone(surrogate, test, answer, tuple(defenses))


def steal(
    victim,
    data: Splits,
    *,
    pool: str | torch.Tensor = "ood",
    defenses: list[Defense] = (),
    surrogate: nn.Module | None = None,
    **settings,
) -> tuple[dict, nn.Module]:
    """Steal and measure in one call, as `divqat attack` does: the attack's extract, then
    evaluate on the data's test set. Returns (the result.json of `divqat attack`,
    the surrogate). `pool` names a registered query pool or gives the thief's own images."""
    if not isinstance(pool, str | torch.Tensor):
        raise DivqatError("pool is a pool name or a tensor of images")
    own = not isinstance(pool, str)
    config = attack(**{"pool": "ood" if own else pool, **settings}).config
    images = pool.float() if own else query_pool(pool, data).images
    stolen, result = steal_and_measure(as_backend(victim), data, config, defenses=tuple(defenses), pool=images,
                                       surrogate=surrogate)  # fmt: skip
    result |= {
        "pool": "custom" if own else pool,
        "victim": str(victim) if isinstance(victim, str | Path | Victim) else type(victim).__name__,
    }
    if surrogate is not None:
        result["surrogate"] = type(surrogate).__name__
    return result, stolen


def input_shape_of(victim, pool, data) -> tuple[int, int, int]:
    if data is not None:
        return data.input_shape
    if pool is not None:
        return tuple(pool.shape[1:])
    return onnx_of(victim).input_shape


def classes_of(victim, data) -> int:
    if data is not None:
        return data.num_classes
    return onnx_of(victim).num_classes


def onnx_of(victim) -> OnnxModel:
    """The ONNX file of a victim that has one, for the shapes it declares."""
    if isinstance(victim, Victim):
        return OnnxModel(victim.onnx)
    if isinstance(victim, str | Path) and Path(victim).suffix == ".onnx":
        return OnnxModel(Path(victim))
    if isinstance(victim, str | Path):
        return OnnxModel(load(victim).onnx)
    raise DivqatError("this victim declares no shapes: pass num_classes= (and a pool, or data=)")


def verify(suspect, record, *, significance: float = 1e-6, max_queries: int = 1000, together: bool = False) -> dict:
    """Is `suspect` (a run directory, an ONNX file, or any `images -> probabilities` callable) a
    clone of a victim behind `watermark` or `scramble`? `record`: a Record, a grid's
    watermark.safetensors, or {account: Record}; `together`: also test the accounts as one (one
    thief behind several keys). Returns what `divqat verify --json` prints (divqat/verify.py; one
    entry per account and test)."""
    from divqat.defenses.watermark import Record
    from divqat.verify import load_suspect
    from divqat.verify import verify as run_verify

    if isinstance(record, str | Path):
        record = {str(record): Record.load(Path(record))}
    elif isinstance(record, Record):
        record = {"record": record}
    if isinstance(suspect, Victim):
        suspect = suspect.run_dir
    answer = load_suspect(str(suspect)) if isinstance(suspect, str | Path) else suspect
    return run_verify(answer, record, significance=significance, max_queries=max_queries, together=together)
