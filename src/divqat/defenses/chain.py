"""A chain of defenses from command-line words, as `divqat attack` and `divqat serve` take them.

--defense reverse-sigmoid:beta=0.16,gamma=0.2 --defense mad:epsilon=0.3   each with its own
--defense mad --defense-param epsilon=0.3                                   to the last one
--defense-sweep epsilon=0.1,0.3                                             the last one, per value
"""

from divqat.defenses.registry import Defense, create_defense
from divqat.errors import DivqatError


def parse_params(pairs: list[str], option: str = "--defense-param") -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DivqatError(f"{option} takes key=value, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise DivqatError(f"--defense-sweep takes key=v1,v2,..., got {text!r}")
    return key.strip(), items


def parse_defense(word: str) -> tuple[str, dict[str, str]]:
    """'name' or 'name:key=value,key=value'."""
    name, _, params = word.partition(":")
    pairs = [p for p in params.split(",") if p.strip()] if params else []
    return name.strip(), parse_params(pairs, option=f"--defense {name.strip()}:")


def build_chain(
    words: list[str], last_params: dict[str, str] | None = None, seed: int | None = None
) -> tuple[Defense, ...]:
    """The defenses in order, each built (and so validated) now; `last_params` (from
    --defense-param or a sweep) go to the last one, on top of its own."""
    if last_params and not words:
        raise DivqatError("--defense-param needs a --defense")
    chain = []
    for i, word in enumerate(words):
        name, params = parse_defense(word)
        if i == len(words) - 1:
            params = {**params, **(last_params or {})}
        chain.append(create_defense(name, params, seed=seed))
    check_watermark_last(chain)
    return tuple(chain)


def check_watermark_last(chain) -> None:
    """At most one watermark, and after it only defenses that keep the top-1: what it records is
    then what the client receives."""
    marks = [i for i, d in enumerate(chain) if d.name == "watermark"]
    if len(marks) > 1:
        raise DivqatError("one watermark per chain")
    if marks and not all(d.keeps_argmax for d in chain[marks[0] + 1 :]):
        later = ", ".join(d.name for d in chain[marks[0] + 1 :] if not d.keeps_argmax)
        raise DivqatError(f"the watermark must come after {later}: it changes the top-1 the watermark recorded")
