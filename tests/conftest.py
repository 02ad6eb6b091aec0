"""Shared fixtures: the project root, GPUStack's reference material, a CLI runner."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> CliResult:
    """Run ``gpufleet`` in-process and capture what it prints."""
    from cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"GPUStack reference material not found at {REFERENCE} (shared/ sits beside the checkout)")
    return REFERENCE


@pytest.fixture(scope="session")
def catalog():
    from backends.catalog import load_catalog

    return load_catalog([ROOT / "backends"], ROOT)
