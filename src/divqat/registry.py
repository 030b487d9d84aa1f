"""Registries: name -> entry, filled by decorators, looked up with a one-line error."""

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
