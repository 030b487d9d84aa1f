"""Training: one loop, pluggable objectives (CE, DivQAT) and divergences."""

from divqat.train.divergences import DIVERGENCES
from divqat.train.loop import History, TrainConfig, fit, predict_proba
from divqat.train.losses import cross_entropy
from divqat.train.objectives import DivQATLoss

__all__ = ["DIVERGENCES", "DivQATLoss", "History", "TrainConfig", "cross_entropy", "fit", "predict_proba"]
