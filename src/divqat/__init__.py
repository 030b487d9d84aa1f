"""divqat: quantization-aware training that makes int8 CNNs hard to steal (DivQAT)."""

import logging

__version__ = "0.1.0"

# torchao's CPU wheel ships CUDA-only kernels and warns at import that it cannot load them;
# torch's pytree warns about torchao's enum registration. Neither affects the CPU flow.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
