"""The folders import one way: documents <- backends, inventory <- stack <- cli, components."""
from __future__ import annotations

import ast

import pytest

from .conftest import ROOT

#: folder -> the project folders it may import
ALLOWED = {
    "documents": set(),
    "backends": {"documents"},
    "inventory": {"documents"},
    "stack": {"documents", "backends", "inventory"},
    "cli": {"documents", "backends", "inventory", "stack"},
    "components": {"documents", "backends", "inventory", "stack"},
}


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & set(ALLOWED)


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_run_one_way(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files
    wrong = {f"{p.relative_to(ROOT)} imports {sorted(_imports(p) - ALLOWED[folder] - {folder})}"
             for p in files if _imports(p) - ALLOWED[folder] - {folder}}
    assert not wrong, wrong


def test_pulumi_only_in_components_and_main():
    for path in ROOT.glob("*/**/*.py"):
        top = path.relative_to(ROOT).parts[0]
        if top in ("components", "tests", ".venv", "bench"):
            continue
        assert "pulumi" not in {n.split(".")[0] for n in _all_imports(path)}, path


def _all_imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names
