"""The CI pipeline: parse .github/workflows and run every command in it that needs neither Pulumi nor
GitHub, against the demo stack, exactly as written (only the virtualenv path is this test's)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
#: what needs GitHub or Pulumi (or a secret, or the real fleet) and cannot run here; everything else must
EXTERNAL = ("pulumi", "gh pr", "secrets.", "GPUFLEET_SSH_KEY", "github.token")
#: commands that reach the fleet: the demo's hosts do not exist, so they must run and report that
FLEET = ("gpufleet status",)


def _steps():
    for wf in WORKFLOWS:
        doc = yaml.safe_load(wf.read_text())
        for job_name, job in doc["jobs"].items():
            for step in job.get("steps", []):
                yield wf.name, job_name, step


def test_the_pipeline_has_the_promised_shape():
    names = {wf.name for wf in WORKFLOWS}
    assert {"pull-request.yml", "deploy.yml", "up.yml"} <= names
    pr = yaml.safe_load((ROOT / ".github/workflows/pull-request.yml").read_text())
    assert True in pr and "pull_request" in pr[True]  # YAML 1.1 reads `on:` as true
    runs = " ".join(s.get("run", "") for s in pr["jobs"]["plan"]["steps"])
    for command in ("gpufleet validate", "gpufleet lock --check", "--format markdown"):
        assert command in runs
    assert any(s.get("uses", "").startswith("pulumi/actions@") and s["with"]["command"] == "preview"
               for s in pr["jobs"]["plan"]["steps"])
    deploy = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    jobs = deploy["jobs"]
    assert jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    assert jobs["prod"]["with"]["environment"] == "production"
    up = yaml.safe_load((ROOT / ".github/workflows/up.yml").read_text())
    steps = [s.get("run", "") for s in up["jobs"]["up"]["steps"]]
    pulumi_up = next(i for i, s in enumerate(up["jobs"]["up"]["steps"]) if s.get("with", {}).get("command") == "up")
    assert any("gpufleet status --stack" in s for s in steps[pulumi_up:])  # the health gate follows the up
    for wf in WORKFLOWS:  # every secret a workflow uses is documented at its top
        text = wf.read_text()
        header = text.split("\nname:")[0]
        for secret in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "GPUFLEET_SSH_KEY"):
            if f"secrets.{secret}" in text:
                assert secret in header or "see pull-request.yml" in header or wf.name == "up.yml"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checkout")
    for name in ("backends", "inventory", "stack", "components"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Pulumi.yaml", "Pulumi.demo.yaml"):
        shutil.copy(ROOT / name, root)
    return root


def test_every_local_command_of_the_pipeline_runs_on_the_demo_stack(checkout):
    bin_dir = Path(sys.executable).parent
    ran = []
    for wf, job, step in _steps():
        command = step.get("run")
        if not command or step.get("name") == "Install":
            continue
        if any(marker in command or marker in str(step.get("env", {})) for marker in EXTERNAL):
            continue
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command.replace(".venv/bin/", f"{bin_dir}/")
                                 + (" --timeout 2" if any(f in command for f in FLEET) else "")],
                                cwd=checkout, env={**os.environ, "STACK": "demo"}, capture_output=True, text=True,
                                timeout=120)
        if any(f in command for f in FLEET):
            assert result.returncode == 6 and "unreachable" in result.stdout, result.stdout + result.stderr
        else:
            assert result.returncode == 0, f"{wf} {job} '{step.get('name')}': {result.stderr}"
        ran.append(step.get("name"))
    assert {"Validate every file", "The committed lock is what placement writes", "Placement diff",
            "Health gate - what runs is what the plan says"} <= set(ran)
    assert (checkout / "plan-demo.md").read_text().startswith("### ✅ gpufleet plan for stack `demo`")


def test_the_install_step_is_the_readmes():
    installs = {s["run"] for _, _, s in _steps() if s.get("name") == "Install"}
    readme = (ROOT / "README.md").read_text()
    assert installs == {"python3 -m venv .venv && .venv/bin/pip install -q -e ."}
    assert "python3 -m venv .venv && .venv/bin/pip install -q -e ." in readme
