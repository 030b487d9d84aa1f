"""The Adversarial Robustness Toolbox (ART 1.20) on both sides of divqat's black box.

    pip install -e '.[art]'          (scripts/setup.sh installs it, so the tests run it)

- `classifier(victim, budget=..., defenses=...)`: a divqat victim (`divqat.api.load(RUN_DIR)`,
  `api.remote(url, key)`, any `images -> probabilities` callable) as an ART
  `BlackBoxClassifier`, behind divqat's defenses, every query counted against the budget by
  divqat's own `BlackBoxVictim` (returned beside it: its `queries`, `remaining`); ART's
  extraction attacks (KnockoffNets, CopycatCNN) run against it unchanged.
- `postprocessor(defense)`: a divqat defense (`divqat.api.defense("reverse-sigmoid", beta=0.2)`)
  as an ART postprocessor, for `postprocessing_defences=[...]` of any ART classifier; defenses
  that look at the queried images (MAD, misinformation, watermark) cannot be one, since ART
  hands a postprocessor only the predictions: put those in `classifier(..., defenses=...)`.
- `art-knockoff` and `art-copycat`: ART's attacks registered as divqat attacks
  (attacks/art.py), so a grid or `divqat attack` puts ART's thief beside divqat's own.
"""

import numpy as np
import torch

from divqat.blackbox.victim import BlackBoxVictim
from divqat.errors import DivqatError


def require_art():
    try:
        import art  # noqa: F401
    except ImportError:
        raise DivqatError("this needs the Adversarial Robustness Toolbox: pip install -e '.[art]'") from None


def black_box(query, input_shape: tuple[int, int, int], nb_classes: int):
    """An ART BlackBoxClassifier over `query(images tensor) -> probabilities tensor`."""
    require_art()
    from art.estimators.classification import BlackBoxClassifier

    def predict(x: np.ndarray) -> np.ndarray:
        return query(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return BlackBoxClassifier(predict, tuple(input_shape), nb_classes, clip_values=(0.0, 1.0))


def classifier(victim, *, budget: int, input_shape: tuple[int, int, int], nb_classes: int, defenses=()):
    """(ART classifier, divqat's books) for `victim` (a `divqat.api.Victim`, anything with
    `predict_proba`, or an `images -> probabilities` callable): ART asks, divqat answers and
    counts."""
    answer = getattr(victim, "predict_proba", victim)
    if not callable(answer):
        raise DivqatError("a victim for ART is divqat.api.load(RUN_DIR), api.remote(url, key) or a callable")
    books = BlackBoxVictim(answer, budget, tuple(defenses))
    return black_box(books.query, input_shape, nb_classes), books


def thieved_classifier(model: torch.nn.Module, input_shape, nb_classes: int, lr: float):
    """A divqat surrogate as the PyTorchClassifier ART trains (cross-entropy takes ART's
    probability targets as they are, so soft labels stay soft)."""
    require_art()
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model, loss=torch.nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(model.parameters(), lr=lr),
        input_shape=tuple(input_shape), nb_classes=nb_classes, clip_values=(0.0, 1.0), device_type="cpu",
    )  # fmt: skip


def postprocessor(defense):
    """`defense` (a divqat Defense that reads only the probabilities) as an ART Postprocessor."""
    require_art()
    from art.defences.postprocessor import Postprocessor

    if defense.uses_images:
        raise DivqatError(
            f"defense {defense.name!r} looks at the queried images, which ART does not give a postprocessor: "
            "use divqat.interop.art.classifier(victim, defenses=[...])"
        )

    class DivqatPostprocessor(Postprocessor):
        params = list(defense.params())

        def __init__(self):
            super().__init__(is_fitted=True, apply_fit=False, apply_predict=True)
            self.defense = defense

        def __repr__(self) -> str:
            return f"postprocessor({defense!r})"

        def __call__(self, preds: np.ndarray) -> np.ndarray:
            probs = torch.from_numpy(np.ascontiguousarray(preds, dtype=np.float32))
            return self.defense(probs, None).numpy()

    return DivqatPostprocessor()
