"""The import graph of divqat: no circles, and the layers kept.

Run it alone to see the rules checked: `python -m pytest tests/test_layering.py -q`. Every
`import` statement counts, at the top of a module or inside a function (a lazy import is still a
dependency); only imports under `if TYPE_CHECKING:` (types, never run) do not.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The faces: what a user drives. The core never imports them, nor a UI library.
FACES = ("divqat.cli", "divqat.cli_options", "divqat.ui", "divqat.api", "divqat.serve", "divqat.experiments")
UI_LIBRARIES = ("typer", "rich", "matplotlib", "fastapi", "uvicorn")
# matplotlib ships the fonts and sample pictures the validation pool is drawn from: data, not UI.
DATA_FROM = {"divqat.data.pools.glyphs": {"matplotlib"}, "divqat.data.pools.photos": {"matplotlib"}}


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "divqat").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def runtime_imports(tree: ast.AST):
    """Import nodes, skipping `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in runtime_imports(child))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from runtime_imports(node)


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(divqat module -> divqat modules it imports, divqat module -> outside top-level packages)."""
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    inner, outer = {}, {}
    for name, path in known.items():
        deps, libs = set(), set()
        for node in runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif node.level == 0 and node.module:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                           for a in node.names]  # fmt: skip
            else:
                targets = []
            for target in targets:
                if target.split(".")[0] == "divqat":
                    deps.add(resolve(target))
                else:
                    libs.add(target.split(".")[0])
        deps.discard(name)
        deps.discard(None)
        inner[name], outer[name] = deps, libs
    return inner, outer


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_import_circles():
    inner, _ = graph()
    assert circles(inner) == []


def test_the_core_never_imports_a_face_or_a_ui_library():
    inner, outer = graph()
    for name in (n for n in inner if not within(n, *FACES)):
        assert not [d for d in inner[name] if within(d, *FACES)], name
        assert not (outer[name] - DATA_FROM.get(name, set())) & set(UI_LIBRARIES), name


@pytest.mark.parametrize(
    "layer,forbidden",
    [
        ("divqat.attacks", ("divqat.defenses",)),
        ("divqat.defenses", ("divqat.attacks",)),
        ("divqat.models", ("divqat.data", "divqat.train")),
        ("divqat.blackbox", ("divqat.serve",)),
        ("divqat.artifacts", ("divqat.train",)),
        ("divqat.configs", ("divqat.experiments", "divqat.cli")),
    ],
)
def test_layers_keep_apart(layer, forbidden):
    inner, _ = graph()
    for name in (n for n in inner if within(n, layer)):
        assert not [d for d in inner[name] if within(d, *forbidden)], name


@pytest.mark.parametrize(
    "module,absent",
    [
        ("divqat.experiments.report", "torch"),  # the report reads JSON: no torch
        ("divqat.experiments.runner", "matplotlib"),  # workers never load the plotting library
        ("divqat.experiments", "matplotlib"),
        ("divqat.configs", "torch"),  # configs are read (report, YAML) without torch
    ],
)
def test_light_modules_stay_light(module, absent):
    code = f"import sys, {module}; print({absent!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_graph_sees_lazy_imports_and_skips_type_only_ones():
    """The rules above mean something: a function-level import is an edge, a TYPE_CHECKING one is not."""
    tree = ast.parse("import a\ndef f():\n    import b\nif TYPE_CHECKING:\n    import c\n")
    assert [n.names[0].name for n in runtime_imports(tree)] == ["a", "b"]
    assert circles({"x": {"y"}, "y": {"x"}, "z": {"x"}}) == [["x", "y"]]
