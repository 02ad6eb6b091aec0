"""Fleet tests: real OpenSSH, a real Docker engine, real keys and host-key checking.

The host is reached exactly as the docker provider reaches it: the docker CLI's ssh://
connection helper runs ``ssh ... -- host docker system dial-stdio``, and a wrapper ``ssh``
on PATH adds the options ``GpuHost`` gives the provider (``ssh_options``).  A replica
rendered by the plan is then run with the inputs ``ModelDeployment`` would register, and
must turn healthy through gpufleet's own health check.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from components.gpu_host import ensure_control_dir, ssh_options, ssh_url
from components.model_deployment import container_args
from stack.containers import ContainerSpec
from stack.plan import build_plan
from stack.project import load_project

from .conftest import ROOT, run_cli
from .docker_api import DockerApi
from .fleet_host import IMAGE, FleetHost
from .provider_port import create_body, tf_inputs


@pytest.fixture(scope="session")
def project(fleet_host: FleetHost, tmp_path_factory) -> Path:
    """Real files on disk: a custom backend (busybox httpd), an inventory with the host, a stack."""
    root = tmp_path_factory.mktemp("fleet-project")
    shutil.copy(ROOT / "Pulumi.yaml", root)
    write_httpd_backend(root)
    www = root / "www"
    (www / "v1").mkdir(parents=True)
    (www / "v1" / "models").write_text('{"data": [{"id": "web"}]}')
    (root / "inventory").mkdir()
    (root / "inventory" / "fleet.yaml").write_text(
        f"hosts:\n  - name: fleet-1\n    address: {fleet_host.address}\n"
        f"    ssh: {{user: root, port: 22, identity_file: {fleet_host.identity}, "
        f"known_hosts: {fleet_host.known_hosts}}}\n"
        f"    port_range: 40000-40009\n    model_cache: {fleet_host.folder}/cache/models\n"
        f"    model_roots: [{www}]\n")
    (root / "stack").mkdir()
    (root / "stack" / "fleet.yaml").write_text(
        "inventory: ../inventory/fleet.yaml\nhealth: {timeout: 60s, interval: 1s, start_period: 1s, retries: 5}\n"
        f"deployments:\n  web:\n    backend: httpd-custom\n    model: {{local_path: {www}}}\n"
        "    replicas: 2\n    resources: {gpus: 0, shm: 64MiB}\n")
    return root


def write_httpd_backend(root: Path) -> None:
    """A custom backend serving {{model_path}} with busybox httpd: a replica that is healthy when the
    model folder holds v1/models."""
    (root / "backends" / "httpd").mkdir(parents=True)
    (root / "backends" / "httpd" / "spec.yaml").write_text(
        "backend_name: httpd-custom\nhealth_check_path: /v1/models\ndefault_version: busybox\n"
        "default_run_command: httpd -f -p {{worker_ip}}:{{port}} -h {{model_path}}\n"
        f"version_configs:\n  busybox:\n    image_name: {IMAGE}\n    custom_framework: cpu\n")


def _docker_over_ssh(host, tmp: Path):
    """A `docker` that reaches the host the way the provider does, with GpuHost's ssh options (and, as the
    Pulumi program does first, the folder of their ControlPath: without it ssh exits 255 before connecting,
    which on a fresh machine failed whichever test reached the host first)."""
    ensure_control_dir()
    wrapper = tmp / "bin"
    wrapper.mkdir(parents=True, exist_ok=True)
    ssh = shutil.which("ssh")
    (wrapper / "ssh").write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in [ssh, *ssh_options(host)])
                                 + ' "$@"\n')
    (wrapper / "ssh").chmod(0o755)
    env = {**os.environ, "PATH": f"{wrapper}:{os.environ['PATH']}", "DOCKER_HOST": ssh_url(host)}
    env.pop("DOCKER_CONTEXT", None)

    def docker(*args: str, check: bool = True, timeout: int = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr}")
        return result

    return docker


def docker_api(host) -> DockerApi:
    """The Engine API of a test host, over the same SSH options the provider gets."""
    ensure_control_dir()
    return DockerApi(["ssh", *ssh_options(host), "-l", host.ssh.user, "-p", str(host.ssh.port), host.address])


def apply(api: DockerApi, spec: ContainerSpec) -> str:
    """Create and start a replica exactly as the provider would from ModelDeployment's inputs."""
    api.remove(spec.name)
    ident = api.create(spec.name, create_body(tf_inputs(container_args(spec, spec.image, {}))))
    api.start(ident)
    return ident


def test_wrong_host_key_is_refused(project, fleet_host, tmp_path):
    plan = build_plan(load_project("fleet", project))
    host = plan.hosts[0]
    good = _docker_over_ssh(host, tmp_path / "good")
    assert good("version", "--format", "{{.Server.Version}}").stdout.strip()
    # a known_hosts that names another key for this address, same user: the open shared connection
    # (trusted under the right known_hosts) must not be reused under this one
    (tmp_path / "other_known_hosts").write_text(f"{fleet_host.address} ssh-ed25519 "
                                                "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    impostor = replace(host, ssh=replace(host.ssh, known_hosts=str(tmp_path / "other_known_hosts")))
    bad = _docker_over_ssh(impostor, tmp_path / "bad")
    result = bad("version", check=False, timeout=60)
    assert result.returncode != 0
    assert "Host key verification failed" in result.stderr or "REMOTE HOST IDENTIFICATION" in result.stderr


def test_rendered_replicas_run_and_turn_healthy(project, fleet_host, tmp_path):
    plan = build_plan(load_project("fleet", project))
    assert [c.key for c in plan.containers] == ["web/0", "web/1"]
    assert {c.port for c in plan.containers} == {40000, 40001}
    docker = _docker_over_ssh(plan.hosts[0], tmp_path)
    api = docker_api(plan.hosts[0])
    for spec in plan.containers:
        apply(api, spec)
    deadline = time.monotonic() + 60
    status = {}
    while time.monotonic() < deadline:
        status = {c.name: docker("inspect", "-f", "{{.State.Health.Status}}", c.name).stdout.strip()
                  for c in plan.containers}
        if set(status.values()) == {"healthy"}:
            break
        time.sleep(1)
    assert set(status.values()) == {"healthy"}, status
    for spec in plan.containers:
        with urllib.request.urlopen(f"{spec.endpoint}/v1/models", timeout=5) as response:
            assert json.loads(response.read()) == {"data": [{"id": "web"}]}
        info = json.loads(docker("inspect", spec.name).stdout)[0]
        assert info["HostConfig"]["NetworkMode"] == "host"
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert info["Config"]["Labels"]["gpufleet.deployment"] == "web"
        assert info["Config"]["Labels"]["gpufleet.port"] == str(spec.port)
        # the model folder is read-only inside; the model cache was created on the host
        write = docker("exec", spec.name, "touch", f"{project}/www/x", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert (fleet_host.folder / "cache" / "models").is_dir()


def test_a_sick_replica_is_reported_unhealthy(project, fleet_host, tmp_path):
    plan = build_plan(load_project("fleet", project))
    spec = plan.containers[0]
    sick = replace(spec, name="gpufleet-sick-0", port=40009,
                   healthcheck=replace(spec.healthcheck, test=tuple(a.replace(str(spec.port), "40009")
                                                                    for a in spec.healthcheck.test), retries=1),
                   command=tuple(a.replace(f":{spec.port}", ":40009") for a in spec.command))
    (project / "www" / "v1").rename(project / "www" / "v1-gone")
    docker = _docker_over_ssh(plan.hosts[0], tmp_path)
    try:
        apply(docker_api(plan.hosts[0]), sick)
        deadline = time.monotonic() + 40
        state = ""
        while time.monotonic() < deadline and state != "unhealthy":
            state = docker("inspect", "-f", "{{.State.Health.Status}}", sick.name).stdout.strip()
            time.sleep(1)
        assert state == "unhealthy"
    finally:
        (project / "www" / "v1-gone").rename(project / "www" / "v1")
        docker("rm", "-f", sick.name, check=False)


def test_many_calls_share_one_ssh_connection(project, fleet_host, tmp_path):
    """sshd accepts only 3 unauthenticated connections at once here; 8 parallel docker calls must all pass
    through the one shared connection (up to sshd's MaxSessions, 10 by default, per connection)."""
    ensure_control_dir()
    host = build_plan(load_project("fleet", project)).hosts[0]
    docker = _docker_over_ssh(host, tmp_path)
    docker("ps")  # the first call opens the shared connection
    check = subprocess.run(["ssh", *ssh_options(host), "-O", "check", "-l", host.ssh.user, host.address],
                           capture_output=True, text=True, timeout=30)
    assert "Master running" in check.stderr
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: docker("ps", "-q", check=False, timeout=120), range(8)))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results if r.returncode]


def test_health_gate_waits_for_healthy_and_explains_a_failure(project, fleet_host, tmp_path):
    """What `pulumi up` runs after each container (components.health_gate), against the real engine."""
    from components.health_gate import _HealthGateProvider
    from inventory.ssh import Endpoint
    from stack.health_wait import NotHealthy

    plan = build_plan(load_project("fleet", project))
    spec = plan.containers[0]
    api = docker_api(plan.hosts[0])
    endpoint = Endpoint.of(plan.hosts[0])
    props = {"endpoint": endpoint.__dict__, "container": spec.name, "container_id": "x", "timeout_s": 60,
             "interval_s": 1}
    apply(api, spec)
    result = _HealthGateProvider().create(props)
    assert result.id == f"{spec.name}@fleet-1"

    # a replica whose command fails: the up fails with its state and its last log lines
    sick = replace(spec, name="gpufleet-fleet-sick-1",
                   command=("sh", "-c", "echo loading weights; echo 'CUDA out of memory' >&2; exit 3"))
    apply(api, sick)
    try:
        with pytest.raises(NotHealthy) as err:
            _HealthGateProvider().create({**props, "container": sick.name, "timeout_s": 30})
        text = str(err.value)
        assert f"{sick.name} on fleet-1 exited" in text
        assert "exit code 3" in text and "CUDA out of memory" in text and "loading weights" in text
    finally:
        api.remove(sick.name)
        api.remove(spec.name)


def test_health_gate_refuses_an_unknown_or_changed_host_key(project, fleet_host, tmp_path):
    from inventory.ssh import Endpoint, HostUnreachable, connect

    host = build_plan(load_project("fleet", project)).hosts[0]
    good = Endpoint.of(host)
    connect(good).close()
    (tmp_path / "other").write_text(f"{fleet_host.address} ssh-ed25519 "
                                    "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    (tmp_path / "empty").write_text("")
    with pytest.raises(HostUnreachable, match="CHANGED"):
        connect(replace(good, known_hosts=str(tmp_path / "other")))
    with pytest.raises(HostUnreachable, match="is not in"):
        connect(replace(good, known_hosts=str(tmp_path / "empty")))
    with pytest.raises(HostUnreachable, match="cannot reach"):
        connect(replace(good, port=1), timeout=5)


def _wait_healthy(api: DockerApi, names: list[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all((api.inspect(n)["State"].get("Health") or {}).get("Status") == "healthy" for n in names):
            return
        time.sleep(1)
    raise AssertionError(f"{names} did not turn healthy")


def test_status_is_ok_when_all_runs_as_planned_and_names_every_difference(project, fleet_host):
    plan = build_plan(load_project("fleet", project))
    api = docker_api(plan.hosts[0])
    for spec in plan.containers:
        apply(api, spec)
    _wait_healthy(api, [c.name for c in plan.containers])
    ok = run_cli("--root", project, "status", "--stack", "fleet", "--json")
    report = json.loads(ok.out)
    assert ok.code == 0 and report["ok"], report["findings"]
    assert {c["name"] for c in report["hosts"][0]["containers"]} == {c.name for c in plan.containers}

    first, second = plan.containers
    extra = replace(first, name="gpufleet-fleet-extra-0", port=40008,
                    command=tuple(a.replace(f":{first.port}", ":40008") for a in first.command))
    try:
        api.request("POST", f"/containers/{first.name}/stop", query={"t": "1"})
        api.remove(second.name)
        apply(api, extra)
        bad = run_cli("--root", project, "status", "--stack", "fleet")
        assert bad.code == 6
        lines = bad.out
        assert f"stopped     {first.name} on fleet-1 is exited" in lines
        assert f"missing     {second.name} (web/1) is not on fleet-1; run pulumi up" in lines
        assert "unexpected  gpufleet-fleet-extra-0 on fleet-1 is not in the plan" in lines
    finally:
        for name in (first.name, second.name, extra.name):
            api.remove(name)


def test_status_reports_an_unreachable_host_without_hanging(project, fleet_host, tmp_path):
    broken = tmp_path / "p"
    shutil.copytree(project, broken)
    inv = broken / "inventory" / "fleet.yaml"
    inv.write_text(inv.read_text().replace("ssh: {user: root, port: 22,", "ssh: {user: root, port: 2,"))
    r = subprocess.run([sys.executable, "-m", "cli.main", "--root", str(broken), "status", "--stack", "fleet",
                        "--timeout", "3"], capture_output=True, text=True, timeout=120, cwd=ROOT)  # a hang fails
    assert r.returncode == 6 and "unreachable fleet-1: cannot reach" in r.stdout


def test_status_with_a_dead_docker_engine_says_so(project, fleet_host, tmp_path):
    """A host whose sshd answers but whose Docker does not: reported, no traceback, exit 6."""
    from .fleet_host import FleetHostProcess

    proc = FleetHostProcess()
    host = proc.start()
    try:
        broken = tmp_path / "p"
        shutil.copytree(project, broken)
        inv = broken / "inventory" / "fleet.yaml"
        text = inv.read_text()
        for old, new in ((fleet_host.address, host.address), (str(fleet_host.identity), str(host.identity)),
                         (str(fleet_host.known_hosts), str(host.known_hosts))):
            text = text.replace(old, new)
        inv.write_text(text)
        proc.kill_dockerd()
        r = run_cli("--root", broken, "status", "--stack", "fleet", "--timeout", "5")
        assert r.code == 6 and "Traceback" not in r.err
        assert "unreachable fleet-1: Docker does not answer: docker ps failed: Cannot connect to the Docker daemon" \
            in r.out
    finally:
        proc.stop()
