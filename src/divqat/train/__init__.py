"""Training: one loop, pluggable objectives (CE, DivQAT) and divergences."""

from divqat.train.divergences import DIVERGENCES
from divqat.train.loop import History, TrainConfig, fit, predict_proba
from divqat.train.losses import cross_entropy
from divqat.train.objectives import DivQAT, DivQATLoss

__all__ = ["DIVERGENCES", "DivQAT", "DivQATLoss", "History", "TrainConfig", "cross_entropy", "fit", "predict_proba"]
