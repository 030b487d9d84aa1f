"""Command-line options generated from a config dataclass: one option per field, with the field's
help text, so that `divqat train` and `divqat attack` take exactly the settings that
divqat/configs.py defines - no second list of options to drift from it.

An option not given is not passed on: the config's default (or its preset's value) holds.
"""

import dataclasses
import inspect
import types
import typing
from typing import Annotated

import typer

# The defense chain's options, shared by `divqat attack` and `divqat serve` (defenses/chain.py).
DefenseOption = Annotated[
    list[str] | None, typer.Option(help="Post-hoc defense NAME[:key=value,...], repeatable (applied in order).")
]
DefenseParamOption = Annotated[list[str] | None, typer.Option(help="key=value for the last --defense, repeatable.")]


def option_type(hint):
    """The type typer parses: T for T and T | None; names separated by commas for tuples of names;
    repeated key=value words for a mapping (the config parses them)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is dict:
        return list[str]
    return str if typing.get_origin(hint) is tuple else hint


def shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def config_parameters(cls, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = option_type(hints[f.name])
        flag = f.metadata.get("flag") or f"--{f.name.replace('_', '-')}"
        extra = f.metadata.get("names", ())
        # A flag is --x/--no-x unless the field names its own pair (--non-target/--all-classes).
        flags = tuple(n for n in extra if "/" in n) or (f"{flag}/--no-{flag[2:]}",)
        names = flags if kind is bool else (flag, *extra)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata.get('help', '')} \\[default: {shown(default)}]"  # escaped: rich markup else
        option = typer.Option(*names, help=help_text, show_default=False)
        annotation = Annotated[kind | None, option]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return params


def with_config_options(cls, skip: tuple[str, ...] = ()):
    """Decorator for a command `command(settings: dict, **own_options)`: its own options, then one
    per field of `cls`; `settings` holds the fields given on the command line."""

    def decorate(command):
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            for p in list(inspect.signature(command).parameters.values())[1:]
        ]
        fields = config_parameters(cls, skip)
        names = {p.name for p in fields}

        def run(**given):
            settings = {k: given.pop(k) for k in list(given) if k in names}
            return command({k: v for k, v in settings.items() if v is not None}, **given)

        run.__signature__ = inspect.Signature(own + fields)
        run.__annotations__ = {p.name: p.annotation for p in own + fields}
        run.__name__, run.__doc__, run.__module__ = command.__name__, command.__doc__, command.__module__
        return run

    return decorate
