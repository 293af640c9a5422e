"""The package's layout: one wing per concept, imports that point down only and never in a circle, modules of a
readable length, and the README's map of the tree that matches the tree.

Every import counts, those inside functions and under ``TYPE_CHECKING`` too: an import hidden to dodge a
circle is still a circle. ``python tests/test_layout.py`` prints the graph, a module and what it imports a line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxtrain"
# From the bottom up: a module may import from its own layer and the layers below it, never from one above.
# A layer is a wing (a subpackage) or a top-level module.
LAYERS = (
    ("parallel",),
    ("data",),
    ("sources",),
    ("nn",),
    ("training",),
    ("config", "build"),
    ("runs",),
    ("experiment", "summary", "interop"),
    ("compare",),
    ("cli",),
    ("__init__", "__main__"),
)
LONGEST = 400  # lines: past a few hundred, a capability gets a module of its own


def modules() -> dict[str, Path]:
    """Every module of the source tree by dotted name; a package by its own name (its ``__init__.py``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports() -> dict[str, set[str]]:
    """What each module imports of the package, anywhere in its text: ``from a.b import c`` counts as a.b.c
    where that is a module, else as a.b."""
    found = modules()
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}:{node.lineno}: a relative import; expected jaxtrain.…"
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in found else node.module for a in node.names}
        graph[name] = {target for target in targets if target in found and target != name}
    return graph


def layer(module: str) -> int:
    """The layer of a module: that of its wing, or of itself at the top of the package."""
    parts = module.split(".")
    key = "__init__" if parts == ["jaxtrain"] else parts[1]
    for i, names in enumerate(LAYERS):
        if key in names:
            return i
    raise AssertionError(f"{module}: in no layer of LAYERS; expected its wing or name there")


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles of ``graph``, one path each (Tarjan's strongly connected components of more than one module)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.quick
def test_no_module_imports_in_a_circle():
    assert circles(imports()) == []


@pytest.mark.quick
def test_imports_point_down_only():
    upward = [f"{module} imports {target}" for module, targets in imports().items() for target in sorted(targets)
              if layer(target) > layer(module) and not (module.startswith(target + ".") or target.startswith(module + "."))]
    assert upward == [], "\n".join(upward)


def test_the_checks_catch_a_circle_and_an_upward_import():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("jaxtrain.runs.folder") > layer("jaxtrain.training.fit") > layer("jaxtrain.data.loader")


@pytest.mark.quick
def test_every_module_is_of_a_readable_length():
    long = {str(path.relative_to(ROOT)): n for path in PACKAGE.rglob("*.py") if (n := len(path.read_text().splitlines())) > LONGEST}
    assert long == {}, f"modules over {LONGEST} lines: {long}"


@pytest.mark.quick
def test_the_readmes_map_of_the_package_is_the_tree():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- layout -->\n```text\n(.*?)```", text, re.S)
    assert block, "README.md: expected the package's tree in a ```text block after <!-- layout -->"
    named, folder = set(), ""
    for line in block.group(1).splitlines()[1:]:  # under jaxtrain/: a wing or a module two spaces in, a wing's modules four
        depth, entry = len(line) - len(line.lstrip()), line.strip().split("  ")[0]
        if depth == 2:
            folder = entry if entry.endswith("/") else ""
        if entry.endswith(".py"):
            named.add(folder + entry if depth == 4 else entry)
    # a wing's __init__.py is the wing's own line
    tree = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if path.parent == PACKAGE or path.name != "__init__.py"}
    assert named == tree, f"in the tree, not the README: {sorted(tree - named)}; in the README, not the tree: {sorted(named - tree)}"


if __name__ == "__main__":
    for module, targets in sorted(imports().items()):
        print(f"{module} [{layer(module)}] -> {', '.join(sorted(targets)) or '-'}")
    print("circles:", circles(imports()) or "none")
