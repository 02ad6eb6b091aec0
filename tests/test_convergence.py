"""A second `pulumi up` with no change changes nothing: registered inputs == the provider's read-back.

The Pulumi program runs under mocks and registers its containers (every vendor path of the demo
stack: NVIDIA by UUID and by index, AMD, Ascend, CPU with memory and cpus limits, a local model,
secrets). Each container is then created on a real Docker engine over SSH exactly as the
provider creates it (tests/provider_port.py, a port of terraform-provider-docker v4.0.0, which
stands in for the provider plugin that cannot be downloaded here), read back with `docker
inspect`, mapped into state as the provider's read does, and compared with the registered
inputs as the next preview would: there must be no difference. GPU containers are created but
not started (this host has no GPUs; Docker validates devices at start), CPU ones run.

Bind-mount sources must exist on the host when a container is created: the few the demo stack
names (the Ascend driver folders, the demo's local model) are created for the test if missing
and removed afterwards.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .docker_api import DockerApi
from .fleet_host import IMAGE
from .provider_port import create_body, diff, read_state, tf_inputs, upload_tar
from .pulumi_harness import run_program
from .test_program import project  # noqa: F401  (the fixture: a copy of the demo project)


@pytest.fixture(scope="module")
def api(fleet_host) -> DockerApi:
    return DockerApi(["ssh", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={fleet_host.known_hosts}",
                      "-o", "BatchMode=yes", "-i", str(fleet_host.identity), "-l", "root", fleet_host.address])


@pytest.fixture
def host_paths():
    """Creates missing bind-mount sources; removes what it created."""
    created: list[Path] = []

    def need(path: str, is_dir: bool) -> None:
        p = Path(path)
        missing = [q for q in [p, *p.parents] if not q.exists()]
        if not missing:
            return
        created.append(missing[-1])  # the topmost missing one
        if is_dir:
            p.mkdir(parents=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("fixture\n")

    yield need
    for top in reversed(created):
        shutil.rmtree(top) if top.is_dir() else top.unlink()


def _registered(project) -> dict[str, dict]:  # noqa: F811
    run = run_program(project)
    return {name: dict(r.inputs) for name, r in run.containers.items()}


def _with_test_image(tf: dict, image_id: str) -> dict:
    """The one input replaced: the image ID, as RemoteImage's image_id (sha256:...) of an image present here."""
    assert str(tf["image"]).startswith("sha256:")
    return {**tf, "image": image_id}


def test_every_registered_container_reads_back_without_a_diff(api, project, host_paths):  # noqa: F811
    image_id = api.image(IMAGE)["Id"]
    containers = _registered(project)
    vendors = set()
    try:
        for name, inputs in sorted(containers.items()):
            tf = _with_test_image(tf_inputs(inputs), image_id)
            for m in tf.get("mounts") or []:
                host_paths(m["source"], is_dir=not m["source"].endswith((".gguf", "npu-smi", ".info")))
            api.remove(name)
            ident = api.create(name, create_body(tf))
            runs_here = not tf.get("devices") and not tf.get("device_requests")
            if runs_here:
                api.start(ident)
            state = read_state(api.inspect(ident), tf)
            assert diff(tf, state) == {}, f"{name}: the next preview would change {diff(tf, state)}"
            vendors.add(next((lbl["value"] for lbl in tf["labels"] if lbl["label"] == "gpufleet.vendor"), None))
            # applying the same inputs again is a no-op: no diff means no replacement, the same container
            again = read_state(api.inspect(name), tf)
            assert diff(tf, again) == {} and api.inspect(name)["Id"] == ident
    finally:
        for name in containers:
            api.remove(name)
    assert {"nvidia", "amd", "ascend", "cpu"} <= vendors
    fields = set().union(*(tf_inputs(i).keys() for i in containers.values()))
    assert {"healthcheck", "cpus", "memory", "memory_swap", "devices", "device_requests", "mounts", "volumes",
            "log_opts", "init", "stop_timeout", "entrypoint", "shm_size"} <= fields


@pytest.mark.parametrize("field, bad, shown", [
    ("healthcheck.start_period", "600s", "10m0s"),
    ("healthcheck.interval", "15000ms", "15s"),
    ("cpus", "2", "2.0"),
    ("memory_swap", None, "8192"),  # left out: Docker sets 2 x memory
])
def test_the_port_catches_inputs_the_provider_would_read_back_differently(api, project, field, bad,  # noqa: F811
                                                                        shown, host_paths):
    """Guards the guard: a duration sent as "600s", an integer cpus, memory without memory_swap all show a diff."""
    image_id = api.image(IMAGE)["Id"]
    inputs = _registered(project)["gpufleet-demo-kokoro-tts-0"]  # CPU only, memory and cpus limits
    tf = _with_test_image(tf_inputs(inputs), image_id)
    if field.startswith("healthcheck."):
        tf["healthcheck"] = {**tf["healthcheck"], field.split(".")[1]: bad}
    elif bad is None:
        tf.pop(field)
    else:
        tf[field] = bad
    name = "gpufleet-convergence-probe"
    api.remove(name)
    try:
        ident = api.create(name, create_body(tf))
        changes = diff({**tf, "name": name}, read_state(api.inspect(ident), tf))
    finally:
        api.remove(name)
    key = field.split(".")[0]
    assert key in changes, changes
    assert shown in repr(changes[key][1])


def test_mindie_config_file_and_working_folder_land_as_written_and_read_back_without_a_diff(api, project, host_paths):  # noqa: F811,E501
    """MindIE's container carries its config.json as an upload (written at create, never read back)
    and a working folder (read back from Config.WorkingDir, ForceNew): both must converge."""
    import io
    import json
    import tarfile

    from backends import mindie_config as mindie

    from .test_plan_cli import edit

    edit(project / "stack" / "demo.yaml", "deployments:", "deployments:\n  mindie-qwen:\n    backend: MindIE\n"
         "    model: {huggingface: Qwen/Qwen3-8B}\n    resources: {gpus: 1, vram: whole}\n")
    from .conftest import run_cli
    assert run_cli("--root", project, "lock", "--stack", "demo").code == 0
    (name, inputs), = [(n, i) for n, i in _registered(project).items() if "mindie" in n]
    tf = _with_test_image(tf_inputs(inputs), api.image(IMAGE)["Id"])
    assert tf["working_dir"] == mindie.WORKING_DIR and [u["file"] for u in tf["upload"]] == [mindie.CONFIG_PATH]
    for m in tf.get("mounts") or []:
        host_paths(m["source"], is_dir=not m["source"].endswith((".gguf", "npu-smi", ".info")))
    api.remove(name)
    try:
        ident = api.create(name, create_body(tf))
        api.put_archive(ident, "/", upload_tar(tf))
        state = read_state(api.inspect(ident), tf)
        assert diff(tf, state) == {}, f"the next preview would change {diff(tf, state)}"
        with tarfile.open(fileobj=io.BytesIO(api.get_archive(ident, mindie.CONFIG_PATH))) as tar:
            member = tar.next()
            written = tar.extractfile(member).read().decode()
        assert member.mode & 0o777 == 0o640
        cfg = json.loads(written)
        # the fetched config.json allows 32768 tokens (the mock's answer): GPUStack's cap applies
        assert cfg["BackendConfig"]["ModelDeployConfig"]["maxSeqLen"] == 8192
        assert cfg["BackendConfig"]["npuDeviceIds"] == [[0]] and cfg["ServerConfig"]["httpsEnabled"] is False
    finally:
        api.remove(name)
