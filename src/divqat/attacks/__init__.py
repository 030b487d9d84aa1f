"""Extraction attacks, one file each, registered by name. Their settings: AttackConfig (divqat/configs.py)."""

from divqat.attacks import art, dfme, jbda, knockoff  # noqa: F401  (registers the attacks)
from divqat.attacks.base import ATTACKS, Attack, Thief, create_attack, get_attack, register_attack

__all__ = ["ATTACKS", "Attack", "Thief", "create_attack", "get_attack", "register_attack"]
