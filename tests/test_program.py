"""The Pulumi program under mocks: what `pulumi preview` would register, and what it refuses."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pulumi
import pytest

from inventory.fleet import load_fleet

from .conftest import ROOT, copy_project, run_cli
from .pulumi_harness import plain, run_program
from .test_plan_cli import edit

CONTAINER = "docker:index/container:Container"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path, program=True)


def _lock(project: Path, stack: str = "demo") -> None:
    assert run_cli("--root", project, "lock", "--stack", stack).code == 0


def test_demo_registers_one_container_per_replica_on_its_hosts_provider(project):
    run = run_program(project)
    fleet = load_fleet(project / "inventory" / "demo.yaml", "inventory/demo.yaml")
    placement = run.outputs["placement"]
    containers = run.containers
    assert len(containers) == len(placement) == 9
    providers = {r.name: r for r in run.of_type("pulumi:providers:docker")}
    for key, where in placement.items():
        dep, replica = key.rsplit("/", 1)
        c = containers[f"gpufleet-demo-{dep}-{replica}"]
        assert c.provider.split("::")[-2] == f"{where['host']}-docker"
        host = fleet.host(where["host"])
        assert providers[f"{where['host']}-docker"].inputs["host"] == \
            f"ssh://{host.ssh.user}@{host.address}:{host.ssh.port}"
    for r in run.resources:
        if r.typ.startswith("docker:"):
            assert r.provider and "default" not in r.provider, r.name
    # images: one per distinct image per host
    pairs = [(r.provider.split("::")[-2], r.inputs["name"]) for r in run.of_type("remoteImage:RemoteImage")]
    assert len(pairs) == len(set(pairs))
    expected = {(placement[k]["host"] + "-docker", None) for k in placement}
    assert {p for p, _ in pairs} == {h for h, _ in expected}
    assert all(r.inputs["keepLocally"] for r in run.of_type("remoteImage:RemoteImage"))
    assert len([p for p in pairs if p[0] == "nv-a100-1-docker"]) == 2  # TEI and vLLM v0.15.1


def test_provider_ssh_options(project):
    run = run_program(project)
    provider = next(r for r in run.of_type("pulumi:providers:docker") if r.name == "cpu-1-docker")
    assert provider.inputs["host"] == "ssh://ops@127.0.10.6:22"
    opts = json.loads(provider.inputs["sshOpts"]) if isinstance(provider.inputs["sshOpts"], str) \
        else provider.inputs["sshOpts"]
    joined = " ".join(opts)
    for want in ("StrictHostKeyChecking=yes", "UserKnownHostsFile=inventory/known_hosts.demo",
                 "-i ~/.ssh/gpufleet_ed25519", "ControlMaster=auto", "ControlPersist=10m", "BatchMode=yes"):
        assert want in joined


def test_per_vendor_devices_and_visibility(project):
    c = run_program(project).containers
    nv = c["gpufleet-demo-llama-70b-0"].inputs
    assert nv["deviceRequests"] == [{"driver": "nvidia", "deviceIds": ["0", "1", "2", "3"], "capabilities": ["gpu"]}]
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3" in nv["envs"]
    assert nv["entrypoints"] == ["vllm", "serve"]
    # the engine gets the fetched model's local path (GPUStack's resolved_path), never the repository id
    # no context cap: the deployment sets --max-model-len itself
    assert nv["command"][:3] == ["/var/lib/gpufleet/models/huggingface/meta-llama/Llama-3.3-70B-Instruct",
                                 "--tensor-parallel-size", "4"]
    # GPUStack's cap, kept because the fetched config.json allows more than 8192 (the mock says 32768)
    qwen = c["gpufleet-demo-qwen3-8b-0"].inputs["command"]
    assert qwen[:3] == ["/var/lib/gpufleet/models/huggingface/Qwen/Qwen3-8B", "--max-model-len", "8192"]
    uuid = c["gpufleet-demo-qwen3-8b-0"].inputs["deviceRequests"][0]["deviceIds"]
    assert uuid == ["GPU-5a9e6c1f-0b4e-4c1d-9f0a-2d7c1a3e5b10"]  # UUIDs when the inventory has them
    amd = c["gpufleet-demo-qwen3-32b-rocm-0"].inputs
    # count-only inventory: render nodes only (a BMC's card0 shifts card numbers, not render nodes)
    assert [d["hostPath"] for d in amd["devices"]] == ["/dev/kfd", "/dev/dri/renderD128", "/dev/dri/renderD129"]
    assert "HIP_VISIBLE_DEVICES=0,1" in amd["envs"] and not amd["deviceRequests"]
    ascend = c["gpufleet-demo-mineru-ascend-0"].inputs
    assert [d["hostPath"] for d in ascend["devices"]] == ["/dev/davinci0", "/dev/davinci_manager", "/dev/devmm_svm",
                                                          "/dev/hisi_hdc"]
    assert {m["target"] for m in ascend["mounts"] if m["readOnly"]} >= {"/usr/local/Ascend/driver",
                                                                         "/usr/local/bin/npu-smi"}
    assert "ASCEND_RT_VISIBLE_DEVICES=0" in ascend["envs"] and "NPU_VISIBLE_DEVICES=0" in ascend["envs"]
    cpu = c["gpufleet-demo-kokoro-tts-0"].inputs
    assert not cpu["devices"] and not cpu["deviceRequests"] and cpu["memory"] == 4096 and cpu["cpus"] == "2.0"
    assert cpu["memorySwap"] == 4096 and cpu["init"] is True and cpu["logDriver"] == "json-file"
    assert cpu["logOpts"] == {"max-file": "5", "max-size": "100m"} and cpu["destroyGraceSeconds"] == 30


def test_container_basics(project):
    c = run_program(project).containers["gpufleet-demo-gguf-rocm-0"].inputs
    assert c["networkMode"] == "host" and c["restart"] == "unless-stopped" and c["wait"] is False
    assert c["shmSize"] == 16384
    # the health gate waits instead, with the stack's timeout, on the container's host
    (gate,) = [r for r in run_program(project).resources if r.name == "gguf-rocm-0-healthy"]
    assert gate.typ == "pulumi-python:dynamic:Resource"
    assert gate.inputs["container"] == "gpufleet-demo-gguf-rocm-0" and gate.inputs["timeout_s"] == 900
    assert gate.inputs["endpoint"]["address"] == "127.0.10.4"
    labels = {label["label"]: label["value"] for label in c["labels"]}
    assert labels == {"gpufleet.stack": "demo", "gpufleet.deployment": "gguf-rocm", "gpufleet.replica": "0",
                      "gpufleet.backend": "llama.cpp", "gpufleet.version": "rocm", "gpufleet.gpus": "2",
                      "gpufleet.vendor": "amd", "gpufleet.port": "40001"}
    model = next(m for m in c["mounts"] if m["target"].endswith(".gguf"))
    assert model["readOnly"] and model["source"] == model["target"]
    assert c["volumes"] == [{"hostPath": "/var/lib/gpufleet/models", "containerPath": "/var/lib/gpufleet/models",
                             "readOnly": False}]
    hc = c["healthcheck"]
    assert hc["tests"][0] == "CMD" and "http://127.0.10.4:40001/v1/models" in hc["tests"]
    assert (hc["interval"], hc["startPeriod"], hc["retries"]) == ("15s", "10m0s", 3)


def test_env_precedence_and_secrets_stay_secret(project):
    edit(project / "stack" / "demo.yaml", "env: {VLLM_LOGGING_LEVEL: INFO}",
         "env: {VLLM_LOGGING_LEVEL: INFO, HF_TOKEN: 'secret:hfToken', NCCL_DEBUG: WARN}")
    edit(project / "backends" / "vllm" / "spec.yaml", "parameter_format: equal",
         "parameter_format: equal\ndefault_env: {NCCL_DEBUG: INFO, VLLM_PORT_BASE: '1'}")
    token = "hf_Sup3rSecretValue"
    run = run_program(project, secrets={"hfToken": token})
    envs, secret = plain(run.containers["gpufleet-demo-qwen3-8b-0"].inputs["envs"])
    assert secret and f"HF_TOKEN={token}" in envs
    assert "NCCL_DEBUG=WARN" in envs and "VLLM_PORT_BASE=1" in envs  # deployment over backend
    other, other_secret = plain(run.containers["gpufleet-demo-llama-70b-0"].inputs["envs"])
    assert not other_secret and "NCCL_DEBUG=INFO" in other
    everything = json.dumps([{k: v for k, v in r.inputs.items() if k != "envs"} for r in run.resources],
                            default=str) + run.logs + json.dumps(run.outputs)
    assert token not in everything
    _lock(project)
    assert token not in (project / "stack" / "demo.lock.yaml").read_text()
    assert token not in run_cli("--root", project, "plan", "--stack", "demo", "--json").out


def test_missing_secret_fails_before_anything_is_registered(project):
    edit(project / "stack" / "demo.yaml", "env: {VLLM_LOGGING_LEVEL: INFO}",
         "env: {VLLM_LOGGING_LEVEL: INFO, HF_TOKEN: 'secret:hfToken'}")
    with pytest.raises(pulumi.RunError) as err:
        run_program(project)
    assert ("stack/demo.yaml:22:47: deployments.qwen3-8b.env.HF_TOKEN: secret 'hfToken' is not set for stack "
            "'demo'; run: pulumi config set --secret hfToken <value>") in str(err.value)


def _inputs(run, prefix=""):
    return {name: json.dumps(r.inputs, sort_keys=True, default=str) for name, r in run.containers.items()
            if name.startswith(prefix)}


def test_editing_one_deployment_changes_only_its_containers(project):
    _lock(project)
    before = _inputs(run_program(project))
    edit(project / "stack" / "demo.yaml", "backend_parameters: [--ctx-size=8192, --gpu-layers=99]",
         "backend_parameters: [--ctx-size=16384, --gpu-layers=99]")
    edit(project / "stack" / "demo.yaml", "    replicas: 2\n    resources: {gpus: 1, vram: 12GiB, share: advisory}",
         "    replicas: 3\n    resources: {gpus: 1, vram: 12GiB, share: advisory}")
    _lock(project)
    after = _inputs(run_program(project))
    changed = {n for n in before if before[n] != after.get(n)} | (set(after) - set(before))
    assert changed == {"gpufleet-demo-gguf-rocm-0", "gpufleet-demo-bge-embed-2"}


def test_a_new_host_changes_no_existing_container(project):
    _lock(project)
    before = _inputs(run_program(project))
    inv = project / "inventory" / "demo.yaml"
    inv.write_text(inv.read_text() + "\n  - name: nv-h100-2\n    address: 127.0.10.7\n    accelerators:\n"
                   "      - {vendor: nvidia, model: NVIDIA H100 80GB HBM3, vram: 81559MiB, count: 8}\n")
    run = run_program(project)
    assert _inputs(run) == before
    assert "nv-h100-2-docker" not in {r.name for r in run.of_type("pulumi:providers:docker")}


def test_invalid_input_fails_and_registers_nothing(project):
    edit(project / "stack" / "demo.yaml", "backend: SGLang", "backend: sglang")
    registered: list = []
    with pytest.raises(pulumi.RunError) as err:
        run_program(project, sink=registered)
    assert registered == []
    text = str(err.value)
    assert "stack/demo.yaml:33:14: deployments.qwen3-32b-rocm.backend: unknown backend 'sglang' (did you mean " \
           "'SGLang'?)" in text
    assert text.endswith("gpufleet: 1 problem; nothing was changed")


def test_nothing_registered_on_invalid_input(project):
    edit(project / "inventory" / "demo.yaml", "vram: 40GiB", "vram: 40GB")
    registered: list = []
    with pytest.raises(pulumi.RunError) as err:
        run_program(project, sink=registered)
    assert [r.typ for r in registered] == []
    assert "inventory/demo.yaml:35:15: hosts[1].accelerators[0].vram: '40GB'" in str(err.value)


def test_unplaced_replicas_fail_unless_allowed(project):
    edit(project / "stack" / "demo.yaml", "resources: {gpus: 2, vram: whole}\n    selectors: {vendor: amd}",
         "resources: {gpus: 9, vram: whole}\n    selectors: {vendor: amd}")
    with pytest.raises(pulumi.RunError) as err:
        run_program(project)
    assert "qwen3-32b-rocm/0: no single host can ever hold 9 × whole rocm" in str(err.value)
    run = run_program(project, config={"allowUnplaced": "true", "allowStaleLock": "true"})
    assert len(run.containers) == 8
    assert run.outputs["unplaced"][0].startswith("qwen3-32b-rocm/0: no single host")


def test_a_stale_lock_fails_the_preview_unless_allowed(project):
    edit(project / "stack" / "demo.yaml", "    replicas: 2\n    resources: {gpus: 1, vram: whole}",
         "    replicas: 3\n    resources: {gpus: 1, vram: whole}")
    registered: list = []
    with pytest.raises(pulumi.RunError) as err:
        run_program(project, sink=registered)
    assert "stack/demo.lock.yaml is missing or does not match this placement; nothing was changed" in str(err.value)
    assert "gpufleet lock --stack demo" in str(err.value)
    assert not [r for r in registered if r.typ.startswith("docker:")]
    run = run_program(project, config={"allowStaleLock": "true"})
    assert "gpufleet-demo-qwen3-8b-2" in run.containers
    _lock(project)
    assert "gpufleet-demo-qwen3-8b-2" in run_program(project).containers


def test_bad_config_value_is_a_clear_error(project):
    with pytest.raises(pulumi.RunError) as err:
        run_program(project, config={"allowUnplaced": "yes please"})
    assert "config gpufleet:allowUnplaced must be true or false, got 'yes please'" in str(err.value)


def test_stack_file_config_and_logged_summary(project):
    # its own inventory: a stack on the demo inventory would have to leave the demo lock's GPUs alone
    shutil.copy(project / "inventory" / "demo.yaml", project / "inventory" / "other.yaml")
    (project / "stack" / "other.yaml").write_text((project / "stack" / "demo.yaml").read_text().replace(
        "../inventory/demo.yaml", "../inventory/other.yaml"))
    with pytest.raises(pulumi.RunError, match="stack/other.lock.yaml is missing or does not match"):
        run_program(project, stack="staging", config={"stackFile": "stack/other.yaml"})
    run = run_program(project, stack="staging", config={"stackFile": "stack/other.yaml", "allowStaleLock": "true"})
    assert len(run.containers) == 9
    assert "gpufleet placement for stack other (binpack): 9 replicas (0 kept, 9 new, 0 moved)" in run.logs
    assert "llama-70b/0 -> nv-h100-1 gpus 0,1,2,3 port 40000 [new]" in run.logs
    assert "is missing or does not match this placement" in run.logs


def test_main_module_is_a_dozen_lines():
    lines = [ln for ln in (ROOT / "__main__.py").read_text().splitlines() if ln.strip()]
    assert len(lines) <= 12


def test_rollout_replaces_max_unavailable_replicas_at_a_time(project):
    text = (project / "stack" / "demo.yaml").read_text()
    text = text.replace("    replicas: 2\n    resources: {gpus: 1, vram: whole}", "    replicas: 2\n"
                        "    resources: {gpus: 1, vram: whole}", 1)
    (project / "stack" / "demo.yaml").write_text(text.replace("deployments:", "rollout: {max_unavailable: 1, "
                                                                               "stop_grace: 45s}\ndeployments:", 1))
    run = run_program(project)
    opts = run.options
    first, second = opts["qwen3-8b-0"], opts["qwen3-8b-1"]
    names = lambda deps: sorted(getattr(d, "_name", None) for d in deps)  # noqa: E731
    assert "qwen3-8b-0" not in names(first.depends_on)
    assert "qwen3-8b-0-healthy" in names(second.depends_on)  # replica 1 waits for replica 0 to be healthy
    inputs = run.containers["gpufleet-demo-qwen3-8b-1"].inputs
    assert inputs["stopTimeout"] == 45 and inputs["destroyGraceSeconds"] == 45
    assert first.delete_before_replace is True  # in place: GPUs and port freed first


@pytest.mark.parametrize("relock", [True, False])
def test_a_replica_moving_host_is_created_before_the_old_one_goes(project, relock):
    """Whether the change's lock was committed (its reservations say who moved) or the lock is stale."""
    _lock(project)
    edit(project / "inventory" / "demo.yaml", "  - name: nv-a100-1\n    address: 127.0.10.2\n",
         "  - name: nv-a100-1\n    address: 127.0.10.2\n    state: cordoned\n")
    if relock:
        _lock(project)
    run = run_program(project, config={} if relock else {"allowStaleLock": "true"})
    moved = [k for k, v in run.outputs["placement"].items() if k.startswith("qwen3-8b/") or k.startswith("bge")]
    assert moved
    for key in ("qwen3-8b/0", "bge-embed/0"):
        name = key.replace("/", "-")
        assert run.outputs["placement"][key]["host"] != "nv-a100-1"
        assert run.options[name].delete_before_replace is False, name
    assert run.options["llama-70b-0"].delete_before_replace is True


def test_every_docker_resource_has_an_explicit_provider(project):
    run = run_program(project)
    for r in run.resources:
        if r.typ.startswith("docker:"):
            assert r.provider, r.name


def test_the_default_docker_provider_is_refused_whatever_the_config():
    import pulumi_docker as docker

    from components.program import require_explicit_provider

    mocks = __import__("tests.pulumi_harness", fromlist=["RecordingMocks"]).RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="gpufleet", stack="x", preview=True)

    @pulumi.runtime.test
    def program():
        pulumi.runtime.register_stack_transformation(require_explicit_provider)
        docker.Container("stray", image="busybox", name="stray")

    with pytest.raises(Exception, match="no explicit docker provider"):
        program()
    assert not [r for r in mocks.resources if r.typ.endswith("container:Container")]


def test_registry_passwords_travel_as_secrets(project):
    edit(project / "inventory" / "demo.yaml", "  model_roots: [/srv/models]",
         "  model_roots: [/srv/models]\n  registries: [{address: registry.example.com, username: puller, "
         "password: 'secret:registryPassword'}]")
    with pytest.raises(pulumi.RunError, match="pulumi config set --secret registryPassword"):
        run_program(project)
    run = run_program(project, secrets={"registryPassword": "hunter2"})
    providers = run.of_type("pulumi:providers:docker")
    assert providers
    for p in providers:
        auth, secret = plain(p.inputs["registryAuth"])  # provider config travels as one JSON string
        assert secret, "the registry login must stay a Pulumi secret in state"
        assert json.loads(auth) == [{"address": "registry.example.com", "password": "hunter2", "username": "puller"}]
    assert "hunter2" not in run.logs
    images = run.of_type("remoteImage:RemoteImage")
    assert all(run.options[i.name].custom_timeouts.create == "3600s" for i in images)


def test_the_lock_is_compared_with_what_the_stack_last_applied(project):
    first = run_program(project)
    applied = dict(first.outputs["placement"])
    # as Pulumi hands them back: numbers are floats
    as_read = {k: {**v, "gpus": [float(g) for g in v["gpus"]], "port": float(v["port"])} for k, v in applied.items()}
    quiet = run_program(project, stack_outputs={"placement": as_read})
    assert "differ in" not in quiet.logs
    drifted = dict(applied)
    drifted["qwen3-8b/0"] = {"host": "nv-l40s-1", "gpus": [2], "port": 40007}
    drifted["ghost/0"] = {"host": "cpu-1", "gpus": [], "port": 40005}
    run = run_program(project, stack_outputs={"placement": drifted})
    assert "the stack's last applied placement and stack/demo.lock.yaml differ in 2 replica(s)" in run.logs
    assert "qwen3-8b/0 ran on nv-l40s-1 gpus [2] port 40007 (last up); stack/demo.lock.yaml places it on " \
           "nv-a100-1" in run.logs
    assert "ghost/0 runs on cpu-1 (last up) but is not in stack/demo.lock.yaml" in run.logs
    assert "differ in" not in run_program(project, config={"compareState": "false"},
                                          stack_outputs={"placement": drifted}).logs


FETCH = "pulumi-python:dynamic:Resource"


def _fetches(run) -> dict:
    return {r.name: r for r in run.of_type(FETCH) if "spec" in r.inputs}


def test_each_host_fetches_each_model_once_before_its_replicas_start(project):
    run = run_program(project)
    fetches = _fetches(run)
    keys = sorted(f.inputs["spec"]["host"] + " " + f.inputs["spec"]["repo"] for f in fetches.values())
    # every replica of a hub model has a fetch on its host; the local GGUF file has none
    placement = run.outputs["placement"]
    stack = (project / "stack" / "demo.yaml").read_text()
    assert "gguf-rocm" in stack and not any(f.inputs["spec"]["repo"].endswith(".gguf") for f in fetches.values())
    assert len(keys) == len(set(keys)) == len([k for k in placement if not k.startswith("gguf-rocm/")])
    for r in fetches.values():
        spec = r.inputs["spec"]
        assert spec["local_dir"] == f"/var/lib/gpufleet/models/huggingface/{spec['repo']}"
        assert spec["model_path"] == spec["local_dir"] and spec["image"] == "gpustack/gpustack:v2.2.3"
        assert r.inputs["endpoint"]["name"] == spec["host"]
        assert run.options[r.name].custom_timeouts.create == f"{4 * 3600 + 300}s"
    # the container waits for its host's fetch: depends_on names it
    host = placement["qwen3-8b/0"]["host"]
    (own,) = [n for n, f in fetches.items() if f.inputs["spec"]["host"] == host
              and f.inputs["spec"]["repo"] == "Qwen/Qwen3-8B"]
    assert own in {d._name for d in run.options["qwen3-8b-0"].depends_on}


def test_a_gguf_glob_with_a_token_from_a_pulumi_secret(project):
    edit(project / "stack" / "demo.yaml", "model: {local_path: /srv/models/qwen2.5-7b-instruct-q4_k_m.gguf}",
         "model: {huggingface: Qwen/Qwen2.5-7B-Instruct-GGUF, huggingface_filename: '*q4_k_m*.gguf'}")
    edit(project / "stack" / "demo.yaml", "deployments:",
         "model_fetch: {hf_token: 'secret:hfToken', hf_endpoint: 'http://127.0.0.1:9/', timeout: 30m}\ndeployments:")
    token = "hf_Sup3rSecretValue"
    run = run_program(project, secrets={"hfToken": token}, preview=False)
    (fetch,) = [f for f in _fetches(run).values() if f.inputs["spec"]["repo"] == "Qwen/Qwen2.5-7B-Instruct-GGUF"]
    spec = fetch.inputs["spec"]
    assert spec["filename"] == "*q4_k_m*.gguf" and spec.get("model_path") is None and spec["timeout_s"] == 1800
    assert ["HF_ENDPOINT", "http://127.0.0.1:9/"] in [list(e) for e in spec["env"]]
    secrets, is_secret = plain(fetch.inputs["secrets"])
    assert is_secret and secrets == {"hfToken": token}
    # the command gets the path the fetch resolved (the mock resolves to a file in the folder)
    command = run.containers["gpufleet-demo-gguf-rocm-0"].inputs["command"]
    assert command[:2] == ["-m", spec["local_dir"] + "/resolved-by-mock.gguf"], command
    everything = json.dumps([{k: v for k, v in r.inputs.items() if k not in ("envs", "secrets")}
                             for r in run.resources], default=str) + run.logs + json.dumps(run.outputs)
    assert token not in everything


def test_a_missing_fetch_token_fails_before_anything_is_registered(project):
    edit(project / "stack" / "demo.yaml", "deployments:", "model_fetch: {hf_token: 'secret:hfToken'}\ndeployments:")
    sink: list = []
    with pytest.raises(pulumi.RunError) as err:
        run_program(project, sink=sink)
    assert ("stack/demo.yaml:8:25: model_fetch.hf_token: secret 'hfToken' is not set for stack 'demo'; run: "
            "pulumi config set --secret hfToken <value>") in str(err.value)
    assert not [r for r in sink if r.typ.startswith("docker:")]
