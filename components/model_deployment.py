"""ModelDeployment: the containers of one deployment, each on the host the plan chose."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import pulumi
import pulumi_docker as docker

from inventory.ssh import Endpoint
from stack.containers import ContainerSpec, finalize_command, finalize_uploads

from .gpu_host import GpuHost
from .health_gate import HealthGate
from .model_fetch import ModelFetch


@dataclass(frozen=True)
class ModelDeploymentArgs:
    """The rendered containers of one deployment, the hosts they land on, and secret values by config key."""

    containers: tuple[ContainerSpec, ...]
    hosts: Mapping[str, GpuHost]
    secrets: Mapping[str, pulumi.Output[str]]
    #: replicas replaced at a time: replica k waits for replica k - max_unavailable
    max_unavailable: int = 1
    #: the model fetches, by FetchSpec.key: a replica starts once its host has the model
    fetches: Mapping[str, "ModelFetch"] = field(default_factory=dict)


def rollout_waves(replicas: list[int], max_unavailable: int) -> dict[int, int | None]:
    """For each replica, the replica it waits for (None for the first wave).

    Pulumi runs independent resources at once; chaining replica k after replica k - m (whose
    create waits until it is healthy) keeps at most m replicas of a deployment down at a time.
    """
    ordered = sorted(replicas)
    return {r: (ordered[i - max_unavailable] if i >= max_unavailable else None) for i, r in enumerate(ordered)}


def go_duration(seconds: int) -> str:
    """Seconds as Go's ``time.Duration.String()`` writes them: 600 -> ``10m0s``, 15 -> ``15s``.

    The provider's read (``resourceDockerContainerRead``) stores health-check times in that form;
    an input in any other spelling ("600s") differs from state on every preview.
    """
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def provider_cpus(cpus: float) -> str:
    """CPUs as the provider's read writes them back (``nanoInt64ToDecimalString`` in helpers.go, v4.0.0).

    The read turns NanoCPUs into ``big.Rat.FloatString(9)``; when the text has exactly nine '0'
    characters it uses ``FloatString(1)``, else it trims trailing zeros: 2 -> ``2.0``,
    0.5 -> ``0.5``, 10 -> ``10.`` (sic). ``cpus`` forces replacement, so any other spelling
    would replace the container on every up.
    """
    nanos = round(cpus * 1_000_000_000)
    if nanos == 0:
        return "0"
    whole, frac = divmod(nanos, 1_000_000_000)
    nine = f"{whole}.{frac:09d}"
    if nine.count("0") == 9:
        tenths = (nanos * 10 + 500_000_000) // 1_000_000_000  # FloatString(1): halves away from zero
        return f"{tenths // 10}.{tenths % 10}"
    return nine.rstrip("0")


def container_args(spec: ContainerSpec, image: pulumi.Input[str],
                   secrets: Mapping[str, pulumi.Output[str]], fetched: "ModelFetch | None" = None) -> dict:
    """The docker.Container inputs for one spec: a pure translation, tested on its own.

    ``fetched``: the replica's model fetch, whose outputs settle what the command leaves open
    (a glob's file, GPUStack's context cap: ``finalize_command``).
    """
    command: pulumi.Input[list[str]] = list(spec.command)
    uploads: pulumi.Input[list] = [docker.ContainerUploadArgs(file=p, content=c, permissions=m)
                                   for p, c, m in spec.uploads]
    if fetched is not None and spec.waits_for_fetch_outputs:
        found = pulumi.Output.all(fetched.model_path, fetched.max_model_len)
        command = found.apply(lambda v: finalize_command(spec, v[0], v[1]))
        if spec.uploads:
            uploads = found.apply(lambda v: [docker.ContainerUploadArgs(file=p, content=c, permissions=m)
                                             for p, c, m in finalize_uploads(spec, v[0], v[1])])
    envs: list[pulumi.Input[str]] = [f"{k}={v}" for k, v in spec.env]
    envs += [pulumi.Output.concat(k, "=", secrets[key]) for k, key in spec.secret_env]
    hc = spec.healthcheck
    args = dict(
        name=spec.name,
        image=image,
        command=command,
        envs=envs,
        network_mode=spec.network_mode,
        restart=spec.restart,
        shm_size=spec.shm_size_mib,
        labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in spec.labels],
        mounts=[docker.ContainerMountArgs(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                for m in spec.mounts if not m.create],
        # host-path volumes: Docker creates a missing host folder, as a fresh host's model cache is
        volumes=[docker.ContainerVolumeArgs(host_path=m.source, container_path=m.target, read_only=m.read_only)
                 for m in spec.mounts if m.create],
        devices=[docker.ContainerDeviceArgs(host_path=d.host_path, container_path=d.container_path,
                                            permissions=d.permissions) for d in spec.devices],
        device_requests=[docker.ContainerDeviceRequestArgs(driver=r.driver, device_ids=list(r.device_ids),
                                                           capabilities=list(r.capabilities))
                         for r in spec.device_requests],
        healthcheck=docker.ContainerHealthcheckArgs(
            tests=list(hc.test), interval=go_duration(hc.interval_s), timeout=go_duration(hc.timeout_s),
            start_period=go_duration(hc.start_period_s), retries=hc.retries) if hc else None,
        # the health gate waits (and explains a failure); the provider's own wait only says "unhealthy"
        wait=False,
        log_driver=spec.log_driver,
        log_opts=dict(spec.log_opts),
        init=spec.init,
        # `docker stop` (and the engine on shutdown) gives this long; the provider's delete too
        stop_timeout=spec.stop_grace_s,
        destroy_grace_seconds=spec.stop_grace_s,
    )
    if spec.entrypoint is not None:
        args["entrypoints"] = list(spec.entrypoint)
    if spec.uploads:
        args["uploads"] = uploads
    if spec.working_dir:
        args["working_dir"] = spec.working_dir
    if spec.memory_mib:
        # without memory_swap Docker sets swap to 2 x memory and the read brings that back
        args["memory"] = spec.memory_mib
        args["memory_swap"] = spec.memory_mib
    if spec.cpus:
        args["cpus"] = provider_cpus(spec.cpus)
    return args


class ModelDeployment(pulumi.ComponentResource):
    """``gpufleet:index:ModelDeployment``: one docker.Container per placed replica, parented here."""

    containers: dict[int, docker.Container]

    def __init__(self, name: str, args: ModelDeploymentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpufleet:index:ModelDeployment", name, {}, opts)
        self.containers = {}
        self.gates: dict[int, HealthGate] = {}
        waits = rollout_waves([s.replica for s in args.containers], args.max_unavailable)
        for spec in sorted(args.containers, key=lambda s: s.replica):
            host = args.hosts[spec.host]
            image = host.images[spec.image]
            timeout = f"{spec.stop_grace_s + 300}s"
            after = waits[spec.replica]
            # replica k starts once replica k - max_unavailable is healthy (or, without waiting, created)
            before = [] if after is None else [self.gates.get(after) or self.containers[after]]
            fetch = args.fetches.get(spec.fetch.key) if spec.fetch else None
            self.containers[spec.replica] = docker.Container(
                f"{name}-{spec.replica}",
                **container_args(spec, image.image_id, args.secrets, fetch),
                opts=pulumi.ResourceOptions(
                    parent=self, provider=host.provider,
                    depends_on=[image, *before, *([fetch] if fetch else [])],
                    # on its own host a replacement needs the GPUs and port the old container holds:
                    # delete first. Moving to another host, the new one starts before the old goes
                    # (placement kept the old one's GPUs and port free for that).
                    delete_before_replace=spec.moved_from is None,
                    # recorded by the provider but not updatable in place
                    replace_on_changes=["healthcheck", "deviceRequests", "devices"],
                    additional_secret_outputs=["envs"] if spec.secret_env else None,
                    custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout, delete=timeout),
                ))
            if spec.wait:
                container = self.containers[spec.replica]
                self.gates[spec.replica] = HealthGate(
                    f"{name}-{spec.replica}-healthy", Endpoint.of(host.host), spec.name, container.id,
                    spec.wait_timeout_s, spec.healthcheck.interval_s if spec.healthcheck else 5,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[container]))
        self.endpoints = [c.endpoint for c in args.containers]
        self.register_outputs({"endpoints": self.endpoints})
