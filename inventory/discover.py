"""``gpufleet discover``: inventory entries for new hosts, read from the hosts themselves.

Host keys: with a known_hosts file, a host not yet in it has its key fetched, its SHA256
fingerprint shown (compare it with the host's own ``ssh-keygen -lf``), and the key appended;
a host whose recorded key differs is refused. Without one, only ~/.ssh/known_hosts is trusted.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko

from .accelerator_tools import Found
from .probe import HostReport, collect
from .ssh import Endpoint, HostUnreachable, connect, open_socket, run


@dataclass
class Discovered:
    address: str
    name: str
    report: HostReport
    fingerprint: str | None = None  # set when its key was just recorded


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as ``ssh-keygen -lf`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def record_key(address: str, port: int, known_hosts: Path, timeout: float = 10) -> str | None:
    """Fetch and append the host's key unless known_hosts has one; returns its fingerprint when recorded."""
    name = address if port == 22 else f"[{address}]:{port}"
    keys = paramiko.HostKeys()
    if known_hosts.is_file():
        keys.load(str(known_hosts))
    if keys.lookup(name) is not None:
        return None  # known: connect() checks it, and refuses a changed one
    try:
        sock = open_socket(address, port, timeout)
    except OSError as err:
        raise HostUnreachable(f"{address}: cannot reach {address}:{port}: {err.strerror or err}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except paramiko.SSHException as err:
        raise HostUnreachable(f"{address}: no SSH host key from {address}:{port}: {err}") from None
    finally:
        transport.close()
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with known_hosts.open("a") as f:
        f.write(f"{name} {key.get_name()} {key.get_base64()}\n")
    return fingerprint(key)


def discover(address: str, user: str, port: int, identity: str | None, known_hosts: Path | None,
             timeout: float = 10) -> Discovered:
    recorded = record_key(address, port, known_hosts, timeout) if known_hosts else None
    kh = str(known_hosts) if known_hosts else os.path.expanduser("~/.ssh/known_hosts")
    client = connect(Endpoint(address, address, port, user, kh, identity), timeout=timeout)
    try:
        report = HostReport(address, address)
        collect(client, report, timeout)
        _, out, _ = run(client, ["hostname", "-s"], timeout=timeout)
    finally:
        client.close()
    name = re.sub(r"[^a-z0-9.-]+", "-", out.strip().lower()).strip("-.") or address.replace(":", "-")
    return Discovered(address, name, report, recorded)


def inventory_yaml(found: list[Discovered], user: str, port: int, identity: str | None,
                   known_hosts: str | None) -> str:
    """Inventory host entries, ready to append under ``hosts:``."""
    lines = []
    for d in found:
        ssh = [f"user: {user}", f"port: {port}"] + ([f"identity_file: {identity}"] if identity else []) + \
            ([f"known_hosts: {known_hosts}"] if known_hosts else [])
        lines += [f"  - name: {d.name}", f"    address: {d.address}", f"    ssh: {{{', '.join(ssh)}}}"]
        if d.report.cpus:
            lines.append(f"    cpus: {d.report.cpus}")
        if d.report.ram_mib:
            lines.append(f"    ram: {d.report.ram_mib}MiB")
        groups: dict[tuple, list[Found]] = {}
        for a in d.report.accelerators:
            f = Found(**a)
            groups.setdefault((f.vendor, f.model, f.vram_mib), []).append(f)
        if groups:
            lines.append("    accelerators:")
        for (vendor, model, vram), devices in sorted(groups.items()):
            lines += [f"      - vendor: {vendor}", f"        model: {_quote(model)}", f"        vram: {vram}MiB",
                      "        devices:"]
            for f in sorted(devices, key=lambda f: f.index):
                extra = (f", uuid: {f.uuid}" if f.uuid else "") + (f", pci_bus_id: '{f.pci_bus_id}'"
                                                                     if f.pci_bus_id else "")
                lines.append(f"          - {{index: {f.index}{extra}}}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
