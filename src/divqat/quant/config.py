"""What to quantize to: weight and activation bit widths."""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from divqat.errors import DivqatError

WEIGHT_BITS = (8, 4)
ACTIVATION_BITS = (8, 7)


@cache
def cpu_has_vnni() -> bool:
    """VNNI (or AMX) int8 dot products; without them u8 x s8 products can saturate int16."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


@dataclass(frozen=True)
class QuantConfig:
    """Symmetric per-channel weights, affine per-tensor unsigned activations (the x86 scheme).

    activation_bits=None picks 8 on CPUs with VNNI and 7 elsewhere.
    """

    weight_bits: int = 8
    activation_bits: int | None = None

    def __post_init__(self):
        if self.weight_bits not in WEIGHT_BITS:
            raise DivqatError(f"weight bits must be one of {WEIGHT_BITS}, got {self.weight_bits}")
        if self.activation_bits is not None and self.activation_bits not in ACTIVATION_BITS:
            raise DivqatError(f"activation bits must be one of {ACTIVATION_BITS}, got {self.activation_bits}")

    def resolved(self) -> "QuantConfig":
        bits = self.activation_bits or (8 if cpu_has_vnni() else 7)
        return QuantConfig(self.weight_bits, bits)
