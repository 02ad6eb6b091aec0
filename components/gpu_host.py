"""GpuHost: one Docker engine reached over SSH, and the images its replicas need."""
from __future__ import annotations

import hashlib
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from inventory.fleet import Host


@dataclass(frozen=True)
class GpuHostArgs:
    """The inventory entry of the host, and the distinct images its containers run."""

    host: Host
    images: tuple[str, ...]


def ssh_url(host: Host) -> str:
    return f"ssh://{host.ssh.user}@{host.address}:{host.ssh.port}"


def ssh_options(host: Host) -> list[str]:
    """Strict host-key checking, the inventory's identity, and one shared connection per host.

    ControlMaster/ControlPersist: every docker call of every resource on this host reuses one
    SSH connection, so hundreds of containers do not trip sshd's MaxStartups.  ``~`` is left
    for ssh to expand, so the same plan is produced on every operator's machine.
    """
    opts = ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
            "-o", "ControlMaster=auto", "-o", "ControlPath=~/.ssh/gpufleet-%C", "-o", "ControlPersist=10m",
            "-o", "ServerAliveInterval=30"]
    if host.ssh.known_hosts:
        opts += ["-o", f"UserKnownHostsFile={host.ssh.known_hosts}"]
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
        self.provider = docker.Provider(
            f"{name}-docker", host=ssh_url(host), ssh_opts=ssh_options(host),
            opts=pulumi.ResourceOptions(parent=self))
        self.images = {
            image: docker.RemoteImage(
                image_resource_name(name, image), name=image, keep_locally=True,
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider))
            for image in args.images
        }
        self.address = host.address
        self.register_outputs({"address": host.address, "images": list(args.images)})
