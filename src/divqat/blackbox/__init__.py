"""The victim as a thief sees it: a budgeted, counted, possibly defended query interface."""

from divqat.blackbox.backends import BACKENDS, load_backend
from divqat.blackbox.victim import BlackBoxVictim, BudgetExceeded, Oracle, defend

__all__ = ["BACKENDS", "BlackBoxVictim", "BudgetExceeded", "Oracle", "defend", "load_backend"]
