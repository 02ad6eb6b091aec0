"""Probe benchmark: gpufleet probe against Ansible on the same test hosts. Prints one JSON object.

    .venv/bin/pip install -e '.[bench]'        # ansible-core
    .venv/bin/python bench/probe.py            # 8, 32 and 64 hosts (needs root, sshd, dockerd)

Each test host is a real OpenSSH server on its own loopback address; they share one Docker engine
(the probe's `docker info` reaches it through each session's DOCKER_HOST). The fleet is mixed: in
turn NVIDIA, AMD and Ascend hosts (fake nvidia-smi, amd-smi, npu-smi printing recorded outputs)
and CPU-only hosts. gpufleet is timed in-process (probe_fleet) and as the whole `gpufleet probe`
command. Both tools run the same queries on every host: OS, architecture, CPUs, memory, Docker
version and runtimes, the vendors' device queries. Ansible runs them as one ad-hoc `shell` call with
forks equal to the host count. Median of 3 runs each, cold (no SSH connection reused between runs:
gpufleet opens fresh paramiko sessions, Ansible's ControlPersist is off).

Both tools log in as `gpufleet-bench`, a user made for the run (a stock home, in the docker group),
as on a fleet where a service account runs the containers. This machine's root has a ~/.bashrc
that runs `pyenv init`, which bash reads for every command over SSH (85 ms of CPU per session, all
64 hosts sharing these 2 cores); GPUFLEET_BENCH_PROBE_USER=root measures with it.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inventory.fleet import load_fleet  # noqa: E402
from inventory.probe import TOOLS as PROBE_TOOLS, probe_fleet  # noqa: E402
from tests.fleet_host import FleetHostProcess  # noqa: E402

#: host counts to probe (GPUFLEET_BENCH_PROBE_SIZES=8 for a quick look)
SIZES = tuple(int(n) for n in os.environ.get("GPUFLEET_BENCH_PROBE_SIZES", "8,32,64").split(","))
RUNS = 3
#: who both tools log in as (made for the run unless it exists; see the module's docstring)
USER = os.environ.get("GPUFLEET_BENCH_PROBE_USER", "gpufleet-bench")
#: what gpufleet's probe asks each host, as one shell line (each vendor tool only where installed)
QUERIES = ("uname -s; uname -m; nproc; grep MemTotal /proc/meminfo; "
           "docker info --format '{{.ServerVersion}} {{range $k, $v := .Runtimes}}{{$k}},{{end}}'; "
           + "; ".join("if " + "elif ".join(f"command -v {name} >/dev/null; then {' && '.join(' '.join(a) for a in argvs)}; "
                                            for name, argvs in tools) + "fi"
                       for tools, _ in PROBE_TOOLS.values()))


#: a mixed fleet: NVIDIA, AMD and Ascend hosts (recorded tool outputs) and CPU-only hosts, in turn
KINDS = ("nvidia", "amd", "ascend", "cpu")
DATA = ROOT / "tests" / "data" / "probe"
TOOLS = {"nvidia": {"nvidia-smi": DATA / "nvidia-smi.h100x8.csv"}, "amd": {"amd-smi static": DATA / "amd-smi-static.mi300a.json",
                                                                             "amd-smi list": DATA / "amd-smi-list.mi300a.json"},
         "ascend": {"npu-smi": DATA / "npu-smi.910b.txt"}, "cpu": {}}
ACCELERATORS = {
    "nvidia": "[{vendor: nvidia, model: NVIDIA H100 80GB HBM3, vram: 81559MiB, count: 4}]",
    "amd": "[{vendor: amd, model: MI300A, vram: 64289MiB, count: 4}]",
    "ascend": "[{vendor: ascend, model: Ascend910, vram: 64GiB, count: 4}]",
    "cpu": "[]",
}


def _kind(i: int) -> str:
    return KINDS[i % len(KINDS)]


def _make_user() -> bool:
    """The bench's login user, in the group the test engines give their socket to; True when made here."""
    subprocess.run(["groupadd", "-f", "docker"], check=True)  # before the engines start: their socket's group
    if USER == "root" or subprocess.run(["id", USER], capture_output=True).returncode == 0:
        return False
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "docker", USER], check=True)
    subprocess.run(["usermod", "-p", "*", USER], check=True)  # unlocked for key login, no password
    return True


def _start(n: int, work: Path) -> tuple[list, list]:
    procs, hosts = [], []
    for i in range(n):
        p = FleetHostProcess()
        procs.append(p)
        tools = {name: path.read_text() for name, path in TOOLS[_kind(i)].items()}
        shared = {"docker_socket": hosts[0].docker_socket} if hosts else {"runtimes": ("nvidia", "ascend")}
        hosts.append(p.start(tools, **shared))
        p.folder.chmod(0o755)  # the login user reads the host's tools and reaches the shared engine's socket
    return procs, hosts


def _inventory(hosts, work: Path) -> Path:
    lines = ["hosts:"]
    for i, h in enumerate(hosts):
        lines.append(f"  - {{name: h{i:03d}, address: {h.address}, ssh: {{user: {USER}, identity_file: {h.identity}, "
                     f"known_hosts: {h.known_hosts}}}, accelerators: {ACCELERATORS[_kind(i)]}}}")
    path = work / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _ansible_inventory(hosts, work: Path) -> Path:
    lines = ["[fleet]"]
    for i, h in enumerate(hosts):
        lines.append(f"h{i:03d} ansible_host={h.address} ansible_user={USER} ansible_ssh_private_key_file={h.identity} "
                     f"ansible_python_interpreter=/usr/bin/python3 ansible_ssh_common_args='-o StrictHostKeyChecking=yes "
                     f"-o UserKnownHostsFile={h.known_hosts} -o ControlMaster=no'")
    path = work / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def _time_gpufleet(inventory: Path) -> tuple[float, int, float]:
    """Wall time, hosts ok, and gpufleet's own CPU seconds (the hosts' sshd run on this machine too)."""
    fleet = load_fleet(inventory)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    reports = probe_fleet(fleet)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return took, sum(r.status == "ok" for r in reports), (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)


def _time_command(inventory: Path) -> float:
    """The whole `gpufleet probe` process: start-up, inventory, probe, report."""
    gpufleet = str(Path(sys.executable).parent / "gpufleet")
    start = time.perf_counter()
    subprocess.run([gpufleet, "probe", "--inventory", str(inventory), "--json"], capture_output=True, timeout=600)
    return time.perf_counter() - start


def _time_ansible(inventory: Path, n: int) -> tuple[float, int]:
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
           "ANSIBLE_NOCOLOR": "1"}
    ansible = str(Path(sys.executable).parent / "ansible")
    start = time.perf_counter()
    # {% raw %}: Ansible would read docker's Go template as Jinja; the leading ': ;' (a shell no-op) keeps
    # Ansible from taking arguments that start with '{' for JSON
    raw = ": ; {% raw %}" + QUERIES + "{% endraw %}"
    result = subprocess.run([ansible, "all", "-i", str(inventory), "-m", "shell", "-a", raw, "-f", str(n)],
                            capture_output=True, text=True, env=env, timeout=600)
    took = time.perf_counter() - start
    ok = sum(1 for line in result.stdout.splitlines() if " | CHANGED | rc=0 >>" in line)
    return took, ok


def main() -> int:
    out = {"runs": RUNS, "user": USER, "sizes": []}
    made = _make_user()
    try:
        _sizes(out)
    finally:
        if made:
            subprocess.run(["userdel", "--remove", USER], capture_output=True)
    print(json.dumps(out, indent=2))
    return 0


def _sizes(out: dict) -> None:
    for n in SIZES:
        with tempfile.TemporaryDirectory(prefix="gf-bench-") as tmp:
            work = Path(tmp)
            procs, hosts = _start(n, work)
            try:
                inv, ini = _inventory(hosts, work), _ansible_inventory(hosts, work)
                ours = [_time_gpufleet(inv) for _ in range(RUNS)]
                command = [_time_command(inv) for _ in range(RUNS)]
                theirs = [_time_ansible(ini, n) for _ in range(RUNS)]
            finally:
                for p in reversed(procs):
                    p.stop()
        g = statistics.median(t for t, _, _ in ours)
        a = statistics.median(t for t, _ in theirs)
        out["sizes"].append({"hosts": n, "gpufleet_s": round(g, 3), "ansible_s": round(a, 3),
                             "ansible_over_gpufleet": round(a / g, 1),
                             "gpufleet_cpu_s": round(statistics.median(c for _, _, c in ours), 3),
                             "gpufleet_command_s": round(statistics.median(command), 3),
                             "gpufleet_hosts_ok": min(ok for _, ok, _ in ours),
                             "ansible_hosts_ok": min(ok for _, ok in theirs)})
        print(json.dumps(out["sizes"][-1]), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
