"""Extraction attacks, one file each, registered by name."""

from divqat.attacks import dfme, jbda, knockoff  # noqa: F401  (registers the attacks)
from divqat.attacks.base import ATTACKS, AttackConfig, Thief, get_attack

__all__ = ["ATTACKS", "AttackConfig", "Thief", "get_attack"]
