"""Registries: name -> entry, filled by decorators, looked up with a one-line error; and the
typed parameters of the entries that are dataclasses (defenses, attacks)."""

import dataclasses

from divqat.errors import DivqatError


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str):
        """Decorator: `@REGISTRY.register("name")` over the entry."""

        def add(entry):
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = entry
            return entry

        return add

    def lookup(self, name: str):
        if name not in self:
            raise DivqatError(f"unknown {self.kind} {name!r}; choose from {', '.join(sorted(self))}")
        return self[name]


def typed_params(cls, params: dict | None, what: str) -> dict:
    """`params` (strings from the command line, or values from YAML and Python) as the types of
    the dataclass `cls`'s init fields, each field's type read from its default; `what` names the
    entry in errors ("defense 'mad'")."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    typed = {}
    for key, value in (params or {}).items():
        if key not in fields:
            raise DivqatError(f"{what} has no parameter {key!r} (parameters: {', '.join(fields) or 'none'})")
        kind = type(fields[key].default)
        try:
            typed[key] = parse_bool(value) if kind is bool else kind(value)
        except (TypeError, ValueError):
            raise DivqatError(f"{what}: {key}={value!r} is not {article(kind.__name__)}") from None
    return typed


def parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"
