"""A watermark on the answers (after DAWN, Szyller et al., ACM MM 2021): a keyed fraction of
inputs is answered with a keyed wrong top-1, and the victim keeps a record of what it told each
account, so that a clone trained on the answers can be proven stolen later (divqat/verify.py).

Which inputs: a keyed hash (HMAC-SHA-256 with the server's secret) of a coarse, robust form of
the image - its 7x7 average-pooled thumbnail projected on 12 keyed random directions, each
projection cut into steps of 0.25 (defenses/keyed.py) - selects a fraction `rate` of such codes. Asking the
same picture again (from any key, after a restart) gives the same code, hence the same answer;
images that look alike at that scale share a code, hence a mark. A deterministic code of a
continuous image has boundaries, so noise can move it: measured on 20k Fashion-MNIST training
images, 12 projections in steps of 0.25 give 11,204 distinct codes, and Gaussian noise of
std 0.01 (0.02) moves 12 % (23 %) of them - fewer projections or longer steps move fewer but
share marks between more images (6 projections: 1,756 codes, 13 % at 0.02).

The answer on a selected input: the probabilities of the top-1 class c and of the mark m swap,
m = (c + 1 + h mod (K - 1)) mod K with h from the same HMAC - a valid probability vector whose
top-1 is m, and the same mark in the top-k and label modes. Given c, m is uniform over the K - 1
other classes and independent of any model that never saw these answers: what makes the
verification's null hypothesis exact.

Unsure answers at a rate of their own (`unsure_below`, `unsure_rate`; off by default): an answer
whose top probability is below `unsure_below` is marked at `unsure_rate` instead of `rate`. A
victim without DivQAT's outlier term is unsure on most of an out-of-distribution thief's pool
(QAT: 57 % of the validation pool below 0.7, 14 % of its own training images), and the benign
images it is unsure of it often gets wrong anyway, so marks there cost benign users least:
measured in docs/divqat.md ("Marks where the victim is unsure").

Marks served sure (`mark_probability`; off by default): a marked answer gives its mark at least
this probability, the other classes scaled down together (their order kept). The swap alone
serves the mark with the victim's own top probability - unsure on most of an out-of-distribution
thief's marks - and a soft-label clone learns such a mark too weakly to keep it once it is
fine-tuned on its own hard labels; served at 0.9, the mark is learned as a top-1 thief learns it
(docs/divqat.md, "Marks served sure"). The top-1 in every mode is the swap's.

The secret and the coarse code: defenses/keyed.py.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from divqat.defenses.keyed import ImageKey
from divqat.defenses.orders import ORDER_LIMIT, PERS, Orders
from divqat.defenses.registry import Defense, check_range, register_defense
from divqat.errors import DivqatError


@dataclass(frozen=True)
class Marks:
    """A batch's watermark: which rows are selected, their codes, the victim's own top-1 and the
    mark, and the victim's own answer on them (before any defense: the verification's test
    removes what a suspect shares with it, divqat/verify.py)."""

    selected: Tensor  # bool (N,)
    codes: list[str]  # hex digests of the selected rows' coarse codes (the record's keys)
    top1: Tensor  # (n_selected,) the victim's answer before the watermark
    mark: Tensor  # (n_selected,) the class answered instead
    classes: int  # K, the victim's number of classes
    own: Tensor  # (n_selected, K) the victim's own probabilities
    confidence: Tensor  # (n_selected,) the probability each mark is served with (the verification's weight)


def is_selected(digest: bytes, rate: float) -> bool:
    """Whether a code of this digest is watermarked: a fraction `rate` of digests."""
    return int.from_bytes(digest[:8], "little") < rate * 2**64


def selection_rates(probs: Tensor, rate: float, unsure_below: float, unsure_rate: float) -> Tensor:
    """(N,) each answer's watermark rate: `unsure_rate` where the victim's top probability is
    below `unsure_below` (0: off), `rate` elsewhere. An unsure answer is mostly a question from
    outside the task - a thief's out-of-distribution pool - or a benign image the victim often
    gets wrong anyway, so marks there cost benign users least. The rate reads only the victim's
    answer, never the suspect's, so the verification's null stays exact."""
    rates = torch.full((len(probs),), rate, dtype=torch.float64)
    if unsure_below > 0:
        rates[probs.detach().max(-1).values.cpu() < unsure_below] = unsure_rate
    return rates


@register_defense("watermark")
@dataclass
class Watermark(Defense):
    uses_images = True  # the mark is keyed by the image's coarse form
    rate: float = 0.005
    secret_file: str = ""
    unsure_below: float = 0.0  # answers whose top probability is below this are marked at unsure_rate; 0: off
    unsure_rate: float = 0.0
    mark_probability: float = 0.0  # the least probability a marked answer gives its mark; 0: the swap alone
    _key: ImageKey | None = field(init=False, repr=False, default=None)

    def __post_init__(self):
        check_range(self, "rate", 0.0, 0.5)
        check_range(self, "unsure_below", 0.0, 1.0)
        check_range(self, "unsure_rate", 0.0, 0.5)
        check_range(self, "mark_probability", 0.0, 1.0)
        self._key = ImageKey(self.secret_file, self.name)

    def fingerprint(self) -> str:
        return self._key.fingerprint(b"divqat watermark id")

    def __repr__(self) -> str:  # never the key
        unsure = f", unsure_below={self.unsure_below}, unsure_rate={self.unsure_rate}" if self.unsure_below else ""
        lifted = f", mark_probability={self.mark_probability}" if self.mark_probability else ""
        return f"Watermark(rate={self.rate}{unsure}{lifted}, secret_file={self.secret_file!r})"

    def codes(self, images: Tensor) -> Tensor:
        return self._key.codes(images)

    def select(self, probs: Tensor, images: Tensor, own: Tensor | None = None) -> Marks:
        """The batch's marks on `probs` (the answers as they reach the watermark); `own`: the
        victim's answers before any defense (default `probs`), kept for the record."""
        top1 = probs.argmax(-1).cpu()
        k = probs.shape[-1]
        if k < 2:
            raise DivqatError("defense 'watermark' needs at least 2 classes")
        digests = self._key.digests(images)
        rates = selection_rates(probs, self.rate, self.unsure_below, self.unsure_rate).tolist()
        chosen = [is_selected(digest, rate) for digest, rate in zip(digests, rates, strict=True)]
        selected = torch.tensor(chosen, dtype=torch.bool)
        picked = [d for d, c in zip(digests, chosen, strict=True) if c]
        offsets = torch.tensor([int.from_bytes(d[8:16], "little") % (k - 1) for d in picked], dtype=torch.long)
        marks = (top1[selected] + 1 + offsets) % k
        names = [ImageKey.name(d) for d in picked]
        own = (probs if own is None else own).detach().cpu().float()[selected]
        confidence = probs.detach().cpu().float()[selected].max(-1).values.clamp_min(self.mark_probability)
        return Marks(selected, names, top1[selected], marks, k, own, confidence)

    def perturb(self, probs: Tensor, images: Tensor) -> Tensor:
        return self.apply(probs, self.select(probs, images))

    def apply(self, probs: Tensor, marks: Marks) -> Tensor:
        """The answers with a batch's marks (from `select` on the same probabilities) put on them."""
        if not marks.selected.any():
            return probs
        out = probs.clone()
        rows = marks.selected.nonzero().squeeze(1).to(probs.device)
        top, mark = marks.top1.to(probs.device), marks.mark.to(probs.device)
        p_top, p_mark = out[rows, top].clone(), out[rows, mark].clone()
        out[rows, top], out[rows, mark] = p_mark, p_top  # the mark now holds the top probability
        # Where another class ties with it, a sliver more makes the mark the top-1 in every mode.
        tied = (out[rows] >= out[rows, mark].unsqueeze(1)).sum(1) > 1
        if tied.any():
            out[rows[tied], mark[tied]] += 1e-6
            out[rows[tied]] /= out[rows[tied]].sum(-1, keepdim=True)
        if self.mark_probability:
            out[rows] = lifted(out[rows], mark, self.mark_probability)
        return out


def lifted(probs: Tensor, mark: Tensor, least: float) -> Tensor:
    """Rows of probabilities whose `mark` holds at least `least`, the other classes scaled down
    together (their order kept) so that each row still sums to 1."""
    rows = torch.arange(len(probs), device=probs.device)
    held = probs[rows, mark]
    target = held.clamp_min(least)
    scale = (1 - target) / (1 - held).clamp_min(1e-12)
    out = probs * scale.unsqueeze(1)
    out[rows, mark] = target
    return out


RECORD_LIMIT = 10_000  # watermarked images kept per account (the first ones told)


@dataclass
class Record:
    """What an account was told on watermarked inputs: the images, the victim's own top-1 and the
    mark answered, the victim's own answer (`natural`) and the probability the mark was served
    with (`confidence`; each empty in records made before it was kept), one row per distinct code,
    the first `limit` of them; and, behind `scramble`, the orders it was told (`orders`,
    defenses/orders.py). `len` counts the watermarked rows."""

    limit: int = RECORD_LIMIT
    classes: int = 0  # the victim's number of classes (0: not known yet)
    codes: list[str] = field(default_factory=list)
    images: list[Tensor] = field(default_factory=list)
    top1: list[int] = field(default_factory=list)
    mark: list[int] = field(default_factory=list)
    orders: Orders = field(default_factory=Orders)
    natural: list[Tensor] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)  # each mark's served probability; empty in records of before

    def add(self, images: Tensor, marks: Marks) -> None:
        self.classes = self.classes or marks.classes
        known = set(self.codes)
        told = (marks.codes, marks.top1.tolist(), marks.mark.tolist(), marks.own, marks.confidence.tolist())
        for image, code, top, mark, own, confidence in zip(images[marks.selected], *told, strict=True):
            if code in known or len(self.codes) >= self.limit:
                continue
            known.add(code)
            self.codes.append(code)
            self.images.append(image.detach().cpu().float().clone())
            self.top1.append(top)
            self.mark.append(mark)
            if len(self.natural) == len(self.codes) - 1:  # a record made before they were kept stays without
                self.natural.append(own.clone())
            if len(self.confidence) == len(self.codes) - 1:
                self.confidence.append(confidence)

    def __len__(self) -> int:
        return len(self.codes)

    def tensors(self) -> dict[str, Tensor]:
        """{images, top1, mark} stacked, and `natural` when every row has the victim's own answer."""
        if not self.codes:
            return {"images": torch.zeros(0), "top1": torch.zeros(0, dtype=torch.long), "mark": torch.zeros(0)}
        out = {
            "images": torch.stack(self.images),
            "top1": torch.tensor(self.top1, dtype=torch.long),
            "mark": torch.tensor(self.mark, dtype=torch.long),
        }
        if len(self.natural) == len(self.codes):
            out["natural"] = torch.stack(self.natural)
        if len(self.confidence) == len(self.codes):
            out["confidence"] = torch.tensor(self.confidence, dtype=torch.float32)
        return out

    @property
    def told(self) -> int:
        """Rows of evidence of either kind (watermarked answers and scrambled orders)."""
        return len(self) + len(self.orders)

    def save(self, path: Path) -> None:
        meta = {"codes": ",".join(self.codes), "limit": str(self.limit), "classes": str(self.classes),
                "order_codes": ",".join(self.orders.codes), "order_limit": str(self.orders.limit),
                "order_per": self.orders.per}  # fmt: skip
        orders = {f"order_{name}": t for name, t in self.orders.tensors().items()}
        save_file({**self.tensors(), **orders}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> "Record":
        try:
            tensors = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except FileNotFoundError:
            raise DivqatError(f"{path}: no such watermark record") from None
        except Exception as e:  # safetensors' own error type for a corrupt file
            raise DivqatError(f"{path}: not a watermark record ({e})") from None
        codes = [c for c in meta.get("codes", "").split(",") if c]
        order_codes = [c for c in meta.get("order_codes", "").split(",") if c]
        order_names = {"order_images", "order_natural", "order_served"}
        own = {"images", "top1", "mark"}
        wrong = not own <= set(tensors) <= {*own, "natural", "confidence", *order_names}
        if wrong or len(codes) != len(tensors["top1"]) or (codes and len(tensors["images"]) != len(codes)):
            raise DivqatError(f"{path}: not a watermark record")
        if any(name in tensors and tensors[name].shape[:1] != (len(codes),) for name in ("natural", "confidence")):
            raise DivqatError(f"{path}: not a watermark record")
        if order_codes and not (order_names <= set(tensors) and
                                all(len(tensors[name]) == len(order_codes) for name in order_names)):  # fmt: skip
            raise DivqatError(f"{path}: not a watermark record")
        try:
            limit, classes = int(meta.get("limit", RECORD_LIMIT)), int(meta.get("classes", 0))
            order_limit = int(meta.get("order_limit", ORDER_LIMIT))
        except ValueError:
            raise DivqatError(f"{path}: not a watermark record") from None
        images = list(tensors["images"]) if codes else []
        orders = Orders(order_limit, order_codes, *([list(tensors[f"order_{n}"]) if order_codes else []
                                                     for n in ("images", "natural", "served")]),
                        per=meta.get("order_per", "image"))  # fmt: skip
        if orders.per not in PERS:
            raise DivqatError(f"{path}: not a watermark record")
        natural = list(tensors["natural"]) if "natural" in tensors and codes else []
        confidence = tensors["confidence"].tolist() if "confidence" in tensors and codes else []
        return cls(limit, classes, codes, images, tensors["top1"].tolist(), tensors["mark"].tolist(), orders,
                   natural, confidence)  # fmt: skip


def pooled(records: list[Record]) -> Record:
    """Several accounts' records of one server as one (one thief behind several keys): their rows
    taken in turn (the first row of each, then the second, ...: a test that reads the first n rows
    reads every account), each code once. A code's mark and its order are keyed by the image alone,
    the same for every key, so a code told to two accounts is one piece of evidence, never two
    (counted twice, the test's rows would not be independent). Orders of the kind most of the
    order rows are (a server restarted with the other `per` told both); the victim's own answer
    and the served confidence kept only where every record has them. Records of different victims
    (image shapes, classes) are a one-line error; those of different servers (secrets) cannot be
    told apart here - a per-class order test needs one secret's orders."""
    shapes = {tuple(image.shape) for r in records for image in [*r.images[:1], *r.orders.images[:1]]}
    classes = {r.classes for r in records if r.classes} | {len(r.orders.served[0]) for r in records if r.orders.served}
    if len(shapes) > 1 or len(classes) > 1:
        raise DivqatError("records of different victims cannot be tested together (image shapes "
                          f"{sorted(shapes)}, classes {sorted(classes)})")  # fmt: skip
    out = Record(limit=sum(r.limit for r in records), classes=max(classes, default=0))
    per = max(PERS, key=lambda kind: sum(len(r.orders) for r in records if r.orders.per == kind))
    out.orders = Orders(limit=sum(r.orders.limit for r in records), per=per)
    natural = all(len(r.natural) == len(r) for r in records)
    confidence = all(len(r.confidence) == len(r) for r in records)
    seen = set()
    for r, i in in_turn(records):
        if r.codes[i] in seen:
            continue
        seen.add(r.codes[i])
        for rows, row in ((out.codes, r.codes), (out.images, r.images), (out.top1, r.top1), (out.mark, r.mark)):
            rows.append(row[i])
        if natural:
            out.natural.append(r.natural[i])
        if confidence:
            out.confidence.append(r.confidence[i])
    told = set()
    for o, i in in_turn([r.orders for r in records if r.orders.per == per]):
        if o.codes[i] not in told:
            told.add(o.codes[i])
            for rows, row in ((out.orders.codes, o.codes), (out.orders.images, o.images),
                              (out.orders.natural, o.natural), (out.orders.served, o.served)):  # fmt: skip
                rows.append(row[i])
    return out


def in_turn(tables: list) -> list[tuple]:
    """(table, row) of each table's first row, then each one's second, ... (tables of any length)."""
    return [(t, i) for i in range(max(map(len, tables), default=0)) for t in tables if i < len(t)]
