"""Is every host of an inventory in its known_hosts? (``gpufleet validate`` asks, before any connection.)"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from documents.problems import Problem
from documents.yaml_reader import path_kind

from .fleet import Fleet

if TYPE_CHECKING:
    import paramiko


def known_hosts_problems(fleet: Fleet, base: Path) -> list[Problem]:
    """A missing known_hosts file, or a host with no key in it: SSH would refuse the host at `pulumi up`."""
    problems = []
    import paramiko  # here: only validate and discover read known_hosts; paramiko costs 0.1 s to import

    loaded: dict[str, paramiko.HostKeys | None] = {}
    for host in fleet.hosts:
        where = fleet.position(host.name)
        if not host.ssh.known_hosts:
            problems.append(Problem(fleet.file, where[0], where[1], f"hosts.{host.name}.ssh.known_hosts",
                                    "no known_hosts file: SSH would accept no host key; record the hosts' keys "
                                    "(ssh-keyscan, check the fingerprints) and name the file in ssh.known_hosts"))
            continue
        path = Path(os.path.expanduser(host.ssh.known_hosts))
        if not path.is_absolute():
            path = base / path
        key = str(path)
        if key not in loaded:
            loaded[key] = None
            if path_kind(path) == "file":
                keys = paramiko.HostKeys()
                try:
                    keys.load(str(path))
                    loaded[key] = keys
                except (OSError, UnicodeDecodeError, paramiko.SSHException):
                    pass
        keys = loaded[key]
        if keys is None:
            problems.append(Problem(fleet.file, where[0], where[1], f"hosts.{host.name}.ssh.known_hosts",
                                    f"known_hosts file {host.ssh.known_hosts} not found or unreadable"))
            continue
        name = host.address if host.ssh.port == 22 else f"[{host.address}]:{host.ssh.port}"
        if keys.lookup(name) is None:
            problems.append(Problem(fleet.file, where[0], where[1], f"hosts.{host.name}",
                                    f"{name} has no key in {host.ssh.known_hosts}; record it (ssh-keyscan -p "
                                    f"{host.ssh.port} {host.address}, check the fingerprint) or run "
                                    "`gpufleet discover --known-hosts`"))
    return problems
