"""The package's layers (docs/architecture.md), checked on the source: nothing imports upward.

Rank of each part, lowest first; a module may import its own part and parts of a lower rank, never a part
of a higher rank, and the rank-3 parts (world, sandbox) and the rank-4 parts (analysis, verl_glue) do not import
each other.
The SPO core imports only the standard library's pure modules and numpy: no files, pandas, torch or verl.
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


def module_name(path: Path) -> str:
    parts = ["spo_helpers", *path.relative_to(PACKAGE).with_suffix("").parts]
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
