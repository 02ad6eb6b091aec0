"""Probe the fleet over SSH (paramiko): what each host really has, against what the inventory says.

One connection per host, with the inventory's known_hosts and key (``inventory.ssh``: an unknown
or changed host key is refused), a few commands, all hosts at once in a bounded pool, each within
its own connect timeout, so one dead host never holds up the others. Each host is ``ok``,
``mismatch`` (with what differs) or ``unreachable`` (with why).
"""
from __future__ import annotations

import concurrent.futures
import re
import time
from dataclasses import asdict, dataclass, field

from .accelerator_tools import (
    AMD_SMI_LIST,
    AMD_SMI_QUERY,
    IXSMI_QUERY,
    NPU_QUERY,
    NVIDIA_QUERY,
    ROCM_QUERY,
    Found,
    ToolOutputError,
    parse_amd,
    parse_ixsmi,
    parse_npu_smi,
    parse_nvidia_smi,
)
from .fleet import Fleet, Host
from .sizes import format_mib
from .ssh import CommandFailed, Endpoint, HostUnreachable, connect, run

#: a device's reported VRAM may differ from the inventory's by this much (ECC, firmware reserve)
VRAM_TOLERANCE = 0.02
#: Docker runtimes that hand a vendor's devices to containers
GPU_RUNTIMES = {"nvidia": ("nvidia",), "amd": (), "ascend": ("ascend",)}
#: per section of the probe's script (named for its vendor): the tools to ask, first found first (each a tool
#: name and the commands it runs, chained with &&), with the parser of what they print
TOOLS = {"nvidia": ([("nvidia-smi", [NVIDIA_QUERY])], parse_nvidia_smi),
         "amd": ([("amd-smi", [AMD_SMI_QUERY, AMD_SMI_LIST]), ("rocm-smi", [ROCM_QUERY])], parse_amd),
         "ascend": ([("npu-smi", [NPU_QUERY])], parse_npu_smi),
         "iluvatar": ([("ixsmi", [IXSMI_QUERY])], parse_ixsmi)}
#: vendors whose devices another vendor's section reports (Hygon's DTK ships rocm-smi, which shows its DCUs):
#: the tool runs once. Vendors in neither table are not checked (a note says so).
READ_BY = {"hygon": "amd"}
CHECKED = frozenset(TOOLS) | frozenset(READ_BY)


def _vendors_of(section: str) -> set[str]:
    return {section} | {vendor for vendor, by in READ_BY.items() if by == section}


@dataclass
class HostReport:
    host: str
    address: str
    status: str = "ok"  # ok | mismatch | unreachable
    problems: list[str] = field(default_factory=list)
    os: str | None = None
    arch: str | None = None
    cpus: int | None = None
    ram_mib: int | None = None
    docker: str | None = None
    runtimes: list[str] = field(default_factory=list)
    accelerators: list[dict] = field(default_factory=list)
    #: what the probe could not check (not a problem: the status stays as it is)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, status: str, problem: str) -> None:
        if status == "unreachable" or self.status == "ok":
            self.status = status
        self.problems.append(problem)

    def as_dict(self) -> dict:
        return asdict(self)


def probe_fleet(fleet: Fleet, timeout: float = 10, workers: int = 64, progress=None) -> list[HostReport]:
    """Every host at once (at most ``workers`` connections), in host order."""
    hosts = list(fleet.hosts)
    reports: dict[str, HostReport] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(hosts)))) as pool:
        futures = {pool.submit(probe_host, h, timeout): h for h in hosts}
        for done in concurrent.futures.as_completed(futures):
            report = done.result()
            reports[report.host] = report
            if progress:
                progress(len(reports), len(hosts), report)
    return [reports[h.name] for h in hosts]


def probe_host(host: Host, timeout: float = 10) -> HostReport:
    start = time.monotonic()
    report = HostReport(host.name, host.address)
    try:
        client = connect(Endpoint.of(host), timeout=timeout)
    except HostUnreachable as err:
        report.fail("unreachable", str(err).split(": ", 1)[-1])
        report.seconds = time.monotonic() - start
        return report
    try:
        collect(client, report, timeout, expected={g.vendor for g in host.groups})
        compare(host, report)
    except CommandFailed as err:  # reached, but a command hung or flooded (a wedged nvidia-smi, say)
        report.fail("unreachable", _stuck(err))
    except (OSError, EOFError) as err:  # the connection died half way
        report.fail("unreachable", f"the SSH session broke: {err}")
    finally:
        client.close()
    report.seconds = time.monotonic() - start
    return report


def collect(client, report: HostReport, timeout: float, expected: set[str] = frozenset()) -> None:
    """Facts, Docker and accelerators of one connected host into ``report``: one remote command.

    A session costs the host a fork of sshd and a shell (about 0.1 s); one script with marked
    sections instead of six commands makes a probe one round trip per host.
    """
    script = [_MARK + "facts", "uname -s; uname -m; nproc; grep MemTotal /proc/meminfo",
              _MARK + "docker", f"{_quote(_DOCKER)} 2>&1; echo {_MARK}rc=$?"]
    for vendor, (tools, _) in sorted(TOOLS.items()):
        err = "/tmp/.gpufleet-probe-$$"
        branches = [f"command -v {name} >/dev/null; then {{ {' && '.join(_quote(a) for a in argvs)}; }} 2>{err}; "
                    f"rc=$?; echo {_MARK}rc=$rc@{name}; cat {err}; rm -f {err}; " for name, argvs in tools]
        script += [_MARK + vendor, "if " + "elif ".join(branches) + f"else echo {_MARK}rc=127; fi"]
    status, out, err = run(client, ["sh", "-c", "\n".join(f"echo '{s}'" if s.startswith(_MARK) else s
                                                          for s in script)], timeout=timeout * 3,
                           what="the probe's commands")
    sections = _sections(out)
    _facts(sections.get("facts", ""), report)
    _docker(sections.get("docker", ""), report)
    for section in sorted(TOOLS):
        _accelerators(sections.get(section, f"{_MARK}rc=127"), report, section, set(expected))
    for vendor in sorted(set(expected) - CHECKED):
        report.notes.append(f"{vendor}: gpufleet cannot read this vendor's tool yet; the inventory's {vendor} "
                            "devices are taken as written")


_MARK = "@@gpufleet:"
_DOCKER = ["docker", "info", "--format", "{{.ServerVersion}} {{range $k, $v := .Runtimes}}{{$k}},{{end}}"]


def _quote(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


def _stuck(err: CommandFailed) -> str:
    """Which of the probe's commands hung or flooded: the section that started and never ended."""
    sections = _sections(err.out)
    running = next((name for name in reversed(list(sections)) if f"{_MARK}rc=" not in sections[name]), None)
    names = {"facts": "uname, nproc or /proc/meminfo", "docker": "docker info"}
    names.update({vendor: " or ".join(name for name, _ in tools) for vendor, (tools, _) in TOOLS.items()})
    where = f" (in {names.get(running, running)}: a wedged tool? run it on the host)" if running else ""
    return f"{err}{where}"


def _sections(out: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith(_MARK) and not line.startswith(_MARK + "rc="):
            current = line[len(_MARK):]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def _split_rc(text: str) -> tuple[int, str, str, str]:
    """A section: its output, the rc line (``rc=N@tool`` for the accelerator tools), then its stderr
    -> (rc, out, err, the tool that ran)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(_MARK + "rc="):
            rc, _, tool = line.split("=", 1)[1].partition("@")
            return int(rc), "\n".join(lines[:i]), "\n".join(lines[i + 1:]), tool
    return 1, text, "", ""


def _facts(text: str, report: HostReport) -> None:
    lines = text.splitlines()
    if len(lines) < 4:
        report.fail("mismatch", "cannot read OS, CPU count and memory (uname, nproc, /proc/meminfo)")
        return
    report.os, report.arch = lines[0].strip(), lines[1].strip()
    report.cpus = int(lines[2]) if lines[2].strip().isdigit() else None
    m = re.search(r"(\d+)\s*kB", lines[3])
    report.ram_mib = int(m.group(1)) // 1024 if m else None


def _docker(text: str, report: HostReport) -> None:
    status, out, _, _ = _split_rc(text)
    if status != 0 or not out.strip():
        reason = (out.strip().splitlines() or ["no output"])[-1][:200]
        report.fail("mismatch", f"Docker does not answer: {reason}")
        return
    version, _, runtimes = out.strip().splitlines()[-1].partition(" ")
    report.docker = version
    report.runtimes = sorted(r for r in runtimes.split(",") if r)


def _accelerators(text: str, report: HostReport, section: str, expected: set[str]) -> None:
    """One tool section of the probe's output: the devices of the vendors it reads; ``expected``: the vendors
    the inventory lists devices of."""
    tools, parse = TOOLS[section]
    vendors = _vendors_of(section)
    names = [name for name, _ in tools]
    status, out, err, tool = _split_rc(text)
    if status == 127:
        for vendor in sorted(vendors & expected):
            missing = f"neither {' nor '.join(names)} is" if len(names) > 1 else f"{names[0]} is not"
            report.fail("mismatch", f"the inventory lists {vendor} devices but {missing} installed")
        return
    if status != 0:
        report.fail("mismatch", f"{tool or names[0]} failed: "
                                f"{(err.strip().splitlines() or ['exit ' + str(status)])[-1][:200]}")
        return
    try:
        found = [d for d in parse(out) if d.vendor in vendors]
    except ToolOutputError as e:
        report.fail("mismatch", str(e))
        return
    report.accelerators += [asdict(d) for d in found]


def compare(host: Host, report: HostReport) -> None:
    """What differs between the inventory's host and what was found, one sentence each."""
    if host.cpus is not None and report.cpus is not None and host.cpus != report.cpus:
        report.fail("mismatch", f"cpus: the inventory says {host.cpus}, the host has {report.cpus}")
    if host.ram_mib is not None and report.ram_mib is not None and \
            abs(host.ram_mib - report.ram_mib) > host.ram_mib * VRAM_TOLERANCE:
        report.fail("mismatch", f"ram: the inventory says {format_mib(host.ram_mib)}, the host has "
                                f"{format_mib(report.ram_mib)}")
    found = [Found(**d) for d in report.accelerators]
    for vendor in sorted({g.vendor for g in host.groups} | {f.vendor for f in found}):
        if vendor not in CHECKED:
            continue  # nothing read it: a note says so (collect)
        mine = [g for g in host.groups if g.vendor == vendor]
        theirs = {f.index: f for f in found if f.vendor == vendor}
        listed = {d.index: (g, d) for g in mine for d in g.devices}
        if len(theirs) != len(listed):
            kinds = ", ".join(g.describe() for g in mine) or f"no {vendor} devices"
            report.fail("mismatch", f"{vendor}: the inventory lists {len(listed)} ({kinds}), the host reports "
                                    f"{len(theirs)}")
        for index, (group, device) in sorted(listed.items()):
            f = theirs.get(index)
            if f is None:
                if len(theirs) == len(listed):
                    report.fail("mismatch", f"{vendor} device {index}: not reported by the host")
                continue
            if abs(f.vram_mib - group.vram_mib) > group.vram_mib * VRAM_TOLERANCE:
                report.fail("mismatch", f"{vendor} device {index}: {format_mib(f.vram_mib)} reported, the inventory "
                                        f"says {format_mib(group.vram_mib)}")
            if device.uuid and f.uuid and device.uuid != f.uuid:
                report.fail("mismatch", f"{vendor} device {index}: UUID {f.uuid} reported, the inventory says "
                                        f"{device.uuid} (a replaced GPU?)")
            if device.pci_bus_id and f.pci_bus_id and device.pci_bus_id != f.pci_bus_id:
                report.fail("mismatch", f"{vendor} device {index}: at {f.pci_bus_id}, the inventory says "
                                        f"{device.pci_bus_id}")
        needs = GPU_RUNTIMES.get(vendor, ())
        if mine and needs and report.docker and not set(needs) & set(report.runtimes):
            report.fail("mismatch", f"{vendor}: Docker has no {'/'.join(needs)} runtime (it has "
                                    f"{', '.join(report.runtimes) or 'none'}); install the vendor's container "
                                    "toolkit")
