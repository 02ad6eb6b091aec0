"""GpuHost: one Docker engine reached over SSH, and the images its replicas need."""
from __future__ import annotations

import hashlib
import os
import pwd
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pulumi
import pulumi_docker as docker

from inventory.fleet import Host


@dataclass(frozen=True)
class GpuHostArgs:
    """The inventory entry of the host, the distinct images its containers run, and how to pull them."""

    host: Host
    images: tuple[str, ...]
    #: registry password by Pulumi config key (the inventory's registries name the keys)
    registry_passwords: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    #: how long one image pull may take (engine images are 10-30 GB)
    pull_timeout_s: int = 3600


def ssh_url(host: Host) -> str:
    address = f"[{host.address}]" if ":" in host.address else host.address
    return f"ssh://{host.ssh.user}@{address}:{host.ssh.port}"


def control_path(host: Host) -> str:
    """A shared-connection socket per (user, host, port, known_hosts, identity).

    Keyed on the trust settings too, so a connection opened under one known_hosts or identity is
    never reused under another; 16 hex digits keep the socket path far below the 104-108 byte
    limit of unix sockets even in a long home folder.
    """
    key = "\0".join([host.ssh.user, host.address, str(host.ssh.port), host.ssh.known_hosts or "",
                      host.ssh.identity_file or ""])
    return f"~/.ssh/gf-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def ssh_options(host: Host) -> list[str]:
    """Strict host-key checking against the inventory's known_hosts only, its identity, one shared connection.

    ControlMaster/ControlPersist: every docker call of every resource on this host reuses one
    SSH connection, so hundreds of containers do not trip sshd's MaxStartups.  ``~`` is left
    for ssh to expand, so the same plan is produced on every operator's machine.
    """
    opts = ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={control_path(host)}", "-o", "ControlPersist=10m",
            "-o", "ServerAliveInterval=30"]
    opts += ["-o", f"UserKnownHostsFile={host.ssh.known_hosts or '/dev/null'}"]
    if host.ssh.identity_file:
        opts += ["-i", host.ssh.identity_file, "-o", "IdentitiesOnly=yes"]
    return opts


def ensure_control_dir() -> Path:
    """The folder of ``ControlPath``; without it OpenSSH refuses to connect at all (exit 255).

    ssh expands ``~`` from the password database, not ``$HOME``; a fresh CI runner often has no
    ``~/.ssh``.  Created 0700, as ssh-keygen would.
    """
    folder = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def image_resource_name(host: str, image: str) -> str:
    """Stable, unique, readable: ``nv-a100-1-vllm-vllm-openai-v0-16-0-3f2a1c``."""
    slug = re.sub(r"[^a-z0-9]+", "-", image.lower()).strip("-")[-40:]
    digest = hashlib.sha256(image.encode()).hexdigest()[:6]
    return f"{host}-{slug}-{digest}"


class GpuHost(pulumi.ComponentResource):
    """``gpufleet:index:GpuHost``: a docker Provider over SSH plus one RemoteImage per distinct image."""

    provider: docker.Provider
    images: dict[str, docker.RemoteImage]

    def __init__(self, name: str, args: GpuHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:index:GpuHost", name, {}, opts)
        host = args.host
        auth = [docker.ProviderRegistryAuthArgs(address=r.address, username=r.username,
                                                password=args.registry_passwords[r.password_key])
                for r in host.registries]
        self.provider = docker.Provider(
            f"{name}-docker", host=ssh_url(host), ssh_opts=ssh_options(host), registry_auth=auth or None,
            opts=pulumi.ResourceOptions(parent=self))
        pull = f"{args.pull_timeout_s}s"
        self.images = {
            image: docker.RemoteImage(
                image_resource_name(name, image), name=image, keep_locally=True,
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider,
                                            custom_timeouts=pulumi.CustomTimeouts(create=pull, update=pull)))
            for image in args.images
        }
        self.address = host.address
        self.host = host
        self.register_outputs({"address": host.address, "images": list(args.images)})
