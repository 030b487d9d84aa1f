"""Post-hoc defenses: wrappers around a victim's outputs, one small file each."""

from divqat.defenses import (  # noqa: F401  (registers the defenses)
    dark_knowledge,
    mad,
    misinformation,
    noise,
    reverse_sigmoid,
    truncation,
    watermark,
)
from divqat.defenses.registry import DEFENSES, Defense, create_defense, register_defense

__all__ = ["DEFENSES", "Defense", "create_defense", "register_defense"]
