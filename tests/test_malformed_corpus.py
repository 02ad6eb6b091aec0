"""Every file in tests/malformed/ is broken in one way; the CLI must say where and how, exit 2.

Each file's first line is ``# expect: LINE: TEXT``: the output must contain
``<file>:LINE:`` and TEXT, and no traceback.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli

CORPUS = ROOT / "tests" / "malformed"
CASES = sorted(p for p in CORPUS.glob("*.yaml") if not p.name.startswith("_"))


def test_corpus_is_big_enough():
    assert len(CASES) >= 30
    kinds = {p.name[0] for p in CASES}
    assert kinds == {"b", "i", "s"}  # backend specs, inventories, stacks


@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_malformed_file_is_reported_with_its_position(case: Path):
    header = case.read_text().splitlines()[0]
    m = re.match(r"# expect: (\d+): (.+)$", header)
    assert m, f"{case.name} lacks an '# expect: LINE: TEXT' header"
    line, text = m.group(1), m.group(2)
    shown = str(case.relative_to(ROOT))
    result = run_cli("--root", ROOT, "validate", case)
    assert result.code == 2, result.out + result.err
    assert "Traceback" not in result.err
    assert f"{shown}:{line}:" in result.err, result.err
    assert text in result.err, result.err
    assert result.err.rstrip().endswith("nothing was changed")
