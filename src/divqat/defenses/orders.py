"""What `scramble` told an account: per distinct coarse code, the image asked, the victim's own
answer and the answer served (the top-1 and its probability exact, the rest in a keyed order).

`divqat verify` asks a suspect these images and tests whether it orders the other classes as
the account was told (divqat/verify_order.py). One row per code: images that share a code share
a permutation, so keeping the first image of each code keeps the rows' permutations
independent, which the test's null needs. `per` says how the orders were drawn: one permutation
per image (its code) or one per top-1 class (`scramble`'s `per`), which decides the test. The
first `limit` codes are kept (2,000 by default:
6.3 MB per account at 28x28; a verification asks at most 1,000).
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor

ORDER_LIMIT = 2_000
PERS = ("image", "class")  # how scramble drew the orders: one permutation per image, or per top-1 class


@dataclass
class Orders:
    limit: int = ORDER_LIMIT
    codes: list[str] = field(default_factory=list)
    images: list[Tensor] = field(default_factory=list)
    natural: list[Tensor] = field(default_factory=list)  # the victim's own answers
    served: list[Tensor] = field(default_factory=list)  # what the account received
    per: str = "image"  # one of PERS

    def add(self, images: Tensor, codes: list[str], natural: Tensor, served: Tensor) -> None:
        if len(self.codes) >= self.limit:
            return
        known = set(self.codes)
        for image, code, own, told in zip(images, codes, natural, served, strict=True):
            if code in known or len(self.codes) >= self.limit:
                continue
            known.add(code)
            self.codes.append(code)
            self.images.append(image.detach().cpu().float().clone())
            self.natural.append(own.detach().cpu().float().clone())
            self.served.append(told.detach().cpu().float().clone())

    def __len__(self) -> int:
        return len(self.codes)

    def tensors(self) -> dict[str, Tensor]:
        """{images, natural, served} stacked (empty tensors when nothing was told)."""
        if not self.codes:
            return {name: torch.zeros(0) for name in ("images", "natural", "served")}
        return {"images": torch.stack(self.images), "natural": torch.stack(self.natural),
                "served": torch.stack(self.served)}  # fmt: skip
