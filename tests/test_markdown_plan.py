"""plan --format markdown: the placement diff as a pull-request comment."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli.markdown import FOLD_AFTER

from .conftest import copy_project, run_cli
from .test_plan_cli import edit


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


def _md(project, *extra) -> tuple[int, str]:
    r = run_cli("--root", project, "plan", "--stack", "demo", "--format", "markdown", *extra)
    return r.code, r.out


def test_an_unchanged_plan_says_so_and_lists_host_use(project):
    code, md = _md(project)
    assert code == 0
    assert md.startswith("### ✅ gpufleet plan for stack `demo`")
    assert "9 placed: **0 new**, **0 moved**, 9 kept; **0 removed**; **0 unplaced**" in md
    assert "| nv-h100-1 | active | 4/8 |" in md and "<details><summary>Hosts: GPU use</summary>" in md
    assert "**New**" not in md


def test_new_moved_removed_and_unplaced_with_reasons(project):
    edit(project / "inventory" / "demo.yaml", "  - name: nv-a100-1\n    address: 127.0.10.2\n",
         "  - name: nv-a100-1\n    address: 127.0.10.2\n    state: cordoned\n")
    edit(project / "stack" / "demo.yaml", "resources: {gpus: 2, vram: whole}\n    selectors: {vendor: amd}",
         "resources: {gpus: 9, vram: whole}\n    selectors: {vendor: amd}")
    text = (project / "stack" / "demo.yaml").read_text().replace(
        "  kokoro-tts:", "  pipes:\n    backend: Kokoro-FastAPI\n    version: latest-cpu\n"
        "    model: {huggingface: hexgrad/Kokoro-82M}\n    resources: {gpus: 0}\n  kokoro-tts:")
    text = text.replace("    model_name: mineru\n", "    model_name: mineru\n    replicas: 0\n")
    (project / "stack" / "demo.yaml").write_text(text)
    code, md = _md(project)
    assert code == 3
    assert md.startswith("### ❌")
    assert "| qwen3-32b-rocm/0 | 9 × whole rocm | no single host can ever hold" in md
    assert "| qwen3-8b/0 | nv-a100-1 |" in md and "host_cordoned" in md
    assert "| pipes/0 | cpu-1 | - |" in md
    assert "**Removed** (1)" in md and "| mineru-ascend/0 | ascend-910b-1 | 0 | 41000 |" in md


def test_long_sections_fold(project):
    edit(project / "stack" / "demo.yaml", "    model_name: kokoro\n    resources: {gpus: 0, ram: 4GiB, cpus: 2}",
         f"    model_name: kokoro\n    replicas: {FOLD_AFTER + 5}\n    resources: {{gpus: 0, ram: 4GiB, cpus: 2}}")
    code, md = _md(project, "--no-lock")
    assert f"<details><summary>New ({FOLD_AFTER + 13})</summary>" in md


def test_values_cannot_break_the_table():
    from cli.markdown import _cell

    assert _cell("a|b\nc<script>") == "a\\|b c&lt;script>"
