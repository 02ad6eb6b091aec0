"""gpufleet promote: what travels goes, what belongs to the environment stays, comments survive."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli

DEV = """# dev: small and fast
inventory: ../inventory/demo.yaml
deployments:
  chat:                          # the model under test
    backend: vLLM
    version: v0.16.0
    model: {huggingface: Qwen/Qwen3-8B}
    replicas: 1
    resources: {gpus: 1, vram: whole}
    env: {VLLM_LOGGING_LEVEL: DEBUG, HF_TOKEN: "secret:devToken", NEW_KNOB: "1"}
    backend_parameters: [--max-model-len=16384]
  embed:
    backend: Text-Embeddings-Inference
    version: CUDA-Ampere-sm80-1.9
    model: {huggingface: BAAI/bge-m3}
    resources: {gpus: 1, vram: 12GiB, share: advisory}
"""

PROD = """# prod: reviewed, two zones
inventory: ../inventory/demo.yaml
strategy: spread
deployments:
  chat:                          # customer-facing; do not scale down
    backend: vLLM
    version: v0.15.1             # pinned until the canary passes
    model: {huggingface: Qwen/Qwen3-8B}
    replicas: 2
    resources: {gpus: 1, vram: whole}
    spread: hosts
    env:
      VLLM_LOGGING_LEVEL: INFO
      HF_TOKEN: "secret:prodToken"
    backend_parameters: [--max-model-len=8192]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("backends", "inventory"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path)
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "dev.yaml").write_text(DEV)
    (tmp_path / "stack" / "prod.yaml").write_text(PROD)
    return tmp_path


def test_a_dry_run_prints_the_diff_and_writes_nothing(project):
    r = run_cli("--root", project, "promote", "dev", "prod", "--deployment", "chat")
    assert r.code == 0, r.err
    assert "-    version: v0.15.1             # pinned until the canary passes" in r.out
    assert "+    version: v0.16.0" in r.out and "+    backend_parameters: [--max-model-len=16384]" in r.out
    assert (project / "stack" / "prod.yaml").read_text() == PROD


def test_write_keeps_the_environment_and_the_comments(project):
    r = run_cli("--root", project, "promote", "dev", "prod", "--deployment", "chat", "--write")
    assert r.code == 0, r.err
    text = (project / "stack" / "prod.yaml").read_text()
    assert text.startswith("# prod: reviewed, two zones\n")
    assert "  chat:                          # customer-facing; do not scale down" in text
    assert "    replicas: 2\n" in text and "    spread: hosts\n" in text and "strategy: spread" in text
    assert 'HF_TOKEN: "secret:prodToken"' in text and "devToken" not in text  # secrets stay the env's own
    assert "      VLLM_LOGGING_LEVEL: DEBUG\n" in text and '      NEW_KNOB: "1"\n' in text
    assert "version: v0.16.0" in text and "--max-model-len=16384" in text
    assert "embed" not in text  # only the named deployment
    again = run_cli("--root", project, "promote", "dev", "prod", "--deployment", "chat")
    assert again.out.strip().endswith("nothing to promote from dev")


def test_a_new_deployment_is_copied_whole_with_a_note(project):
    r = run_cli("--root", project, "promote", "dev", "prod", "--write")
    assert r.code == 0, r.err
    assert "note: embed is new in the target: copied whole" in r.err
    assert "embed:" in (project / "stack" / "prod.yaml").read_text()


def test_refuses_a_source_that_does_not_validate_or_place(project):
    (project / "stack" / "dev.yaml").write_text(DEV.replace("backend: vLLM", "backend: vllm"))
    r = run_cli("--root", project, "promote", "dev", "prod")
    assert r.code == 2 and "unknown backend 'vllm'" in r.err
    (project / "stack" / "dev.yaml").write_text(DEV.replace("replicas: 1", "replicas: 40"))
    r = run_cli("--root", project, "promote", "dev", "prod")
    assert r.code == 2 and "does not fully place" in r.err
    assert (project / "stack" / "prod.yaml").read_text() == PROD
    (project / "stack" / "dev.yaml").write_text(DEV)
    r = run_cli("--root", project, "promote", "dev", "prod", "--deployment", "nope")
    assert r.code == 2 and "no deployment nope in stack dev" in r.err
