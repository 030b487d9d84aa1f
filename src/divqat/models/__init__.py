"""Model zoo: one file per family, registered by name."""

from divqat.models import cnn, lenet, resnet  # noqa: F401  (registers the models)
from divqat.models.registry import MODELS, Normalize, create_model, register_model

__all__ = ["MODELS", "Normalize", "create_model", "register_model"]
