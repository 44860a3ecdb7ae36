"""The package's layers (docs/architecture.md), checked on the source: nothing imports upward.

Rank of each part, lowest first; a module may import its own part and parts of a lower rank, never a part
of a higher rank, and the rank-3 parts (world, sandbox) and the rank-4 parts (analysis, verl_glue) do not import
each other.
The SPO core imports only the standard library's pure modules and numpy: no files, pandas, torch or verl.
No module imports itself through others: the import graph of the package, inside a layer too, has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spo_helpers"
# errors, backends, processes and their threads, bars
BASE = {"errors", "backends", "process_tree", "cpu_threads", "progress", "", "__version__"}
RANK = {"base": 0, "core": 1, "formats": 2, "world": 3, "sandbox": 3, "analysis": 4, "verl_glue": 4, "stages": 5}
CORE_ALLOWED_TOP_LEVEL = {"__future__", "collections", "dataclasses", "typing", "math", "numpy", "spo_helpers"}
CORE_FORBIDDEN_ANYWHERE = {"pandas", "pyarrow", "verl", "os", "io", "json", "pathlib", "pickle", "shutil", "yaml"}


def part_of(module: str) -> str:
    """``spo_helpers.formats.keys`` -> ``formats``; top-level verbs are ``stages``; errors/backends are ``base``."""
    parts = module.split(".")[1:]
    head = parts[0] if parts else ""
    if head in BASE:
        return "base"
    if (PACKAGE / head).is_dir():
        return head
    return "stages"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = ["spo_helpers", *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, at_top_level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "spo_helpers":
                found += [(f"spo_helpers.{alias.name}", node.lineno, id(node) in top) for alias in node.names]
            else:
                found.append((node.module, node.lineno, id(node) in top))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_imports_upward(path):
    here = part_of(module_name(path))
    for target, line, _ in imports(path):
        if not target.startswith("spo_helpers"):
            continue
        there = part_of(target)
        where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        assert RANK[there] <= RANK[here], f"{where}: {here} (rank {RANK[here]}) may not import {there}"
        if RANK[here] == RANK[there] and RANK[here] in (3, 4):
            assert here == there, f"{where}: {here} and {there} are side by side and stay independent"


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_the_core_is_numpy_only(path):
    for target, line, top_level in imports(path):
        root = target.split(".")[0]
        where = f"core/{path.name}:{line} imports {target}"
        assert root not in CORE_FORBIDDEN_ANYWHERE, f"{where}: the SPO core reads no files and uses no pandas/verl"
        if root == "spo_helpers":
            assert part_of(target) in ("core", "base"), f"{where}: the core imports only the core"
        if top_level:
            assert root in CORE_ALLOWED_TOP_LEVEL, f"{where}: the core imports only numpy and pure stdlib modules"
    assert "open(" not in path.read_text(encoding="utf-8"), f"core/{path.name} opens a file"


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` over every ``spo_helpers`` import in ``package``'s source.

    Imports inside functions count. ``from a.b import c`` imports the module ``a.b.c`` when there is one, else
    ``a.b``; a package's ``__init__`` importing its modules counts like any other import. Importing a module
    also runs its parents' ``__init__``, but that edge exists for every module, so it is left out.
    """
    paths = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                for alias in node.names:
                    targets.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base)
            for target in targets:
                if target in paths and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted, in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def describe_cycle(graph: dict[str, dict[str, int]], members: list[str]) -> str:
    """One cycle as the imports that close it: ``a imports b (line 3), b imports a (line 40)``."""
    inside = set(members)
    edges = [
        f"{source} imports {target} (line {line})"
        for source in members
        for target, line in sorted(graph[source].items())
        if target in inside
    ]
    return f"{' <-> '.join(members)}: " + ", ".join(edges)


def test_no_import_cycles():
    graph = import_graph(PACKAGE)
    cycles = [describe_cycle(graph, members) for members in import_cycles(graph)]
    assert not cycles, "import cycles (move the shared part to a module both import):\n" + "\n".join(cycles)


def test_the_cycle_checker_finds_a_planted_cycle(tmp_path):
    """Not vacuous: a cycle through a function-local import, and one through a package's ``__init__``, are found;
    a package importing its modules and a sibling importing them through the package are not cycles."""
    package = tmp_path / "spo_helpers"
    (package / "part").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from spo_helpers.b import thing\n",
        "b.py": "def thing():\n    from spo_helpers import a\n    return a\n",
        "c.py": "from spo_helpers.part import one\nimport spo_helpers.part.two\n",
        "part/__init__.py": "from spo_helpers.part.one import ONE\nNAME = 'part'\n",
        "part/one.py": "ONE = 1\n",
        "part/two.py": "from spo_helpers.part import one\n",
        "part/three.py": "from spo_helpers.part import NAME\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert graph["spo_helpers.c"] == {"spo_helpers.part.one": 1, "spo_helpers.part.two": 2}
    assert graph["spo_helpers.b"] == {"spo_helpers.a": 2}
    assert import_cycles(graph) == [["spo_helpers.a", "spo_helpers.b"]]
    (package / "part" / "__init__.py").write_text("from spo_helpers.part.three import *\nNAME = 'part'\n")
    assert import_cycles(import_graph(package)) == [
        ["spo_helpers.a", "spo_helpers.b"],
        ["spo_helpers.part", "spo_helpers.part.three"],
    ]
    message = describe_cycle(graph, ["spo_helpers.a", "spo_helpers.b"])
    assert "spo_helpers.b imports spo_helpers.a (line 2)" in message


def test_the_checker_sees_a_violation(tmp_path):
    """The rule is not vacuous: an upward import in a core-like module is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from spo_helpers.verl_glue.spo_trainer import SPOTrainer\nimport pandas\n")
    found = imports(bad)
    assert ("spo_helpers.verl_glue.spo_trainer", 1, True) in found
    assert RANK[part_of(found[0][0])] > RANK["core"]
    assert part_of("spo_helpers.formats.keys") == "formats"
    assert part_of("spo_helpers.stages.train") == "stages"
    assert part_of("spo_helpers.errors") == "base"
