"""Render one placed replica into a complete container spec: plain data the components copy verbatim.

Everything a container needs is decided here, not in Pulumi code: image, entrypoint and
command (exec form), environment (secrets as references, never values), devices per vendor,
visible-devices variables, mounts, labels, health check, limits.
"""
from __future__ import annotations

from dataclasses import dataclass

from backends import mindie_config as mindie
from backends.builtins import BUILDERS, CAP_TOKENS, CONTEXT_CAP, BuiltinContext
from backends.memory import fraction, knob_for
from backends.parameters import find_parameter
from backends.render import SECRET_PREFIX, Variables, render
from documents.problems import InputError
from inventory.fleet import Host
from inventory.vendors import VENDORS, DeviceNode, DeviceRef, DeviceRequest, Exposure

from .fetches import FetchSpec, pending_path, render_fetch
from .placement.model import Assignment, replica_key
from .schema import Health, StackFile
from .workloads import Workload

LABEL_PREFIX = "gpufleet."


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool
    #: create the host folder when missing (the model cache); otherwise a missing source fails the
    #: container (a local model, the Ascend driver) rather than mounting an empty folder
    create: bool = False


@dataclass(frozen=True)
class HealthCheck:
    test: tuple[str, ...]
    interval_s: int
    timeout_s: int
    start_period_s: int
    retries: int


@dataclass(frozen=True)
class ContainerSpec:
    deployment: str
    replica: int
    host: str
    address: str
    port: int
    name: str  # the container's name on the host
    image: str
    entrypoint: tuple[str, ...] | None  # None: the image's own
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # plain values, sorted by name
    secret_env: tuple[tuple[str, str], ...]  # (variable, Pulumi config key)
    device_requests: tuple[DeviceRequest, ...]
    devices: tuple[DeviceNode, ...]
    mounts: tuple[Mount, ...]
    labels: tuple[tuple[str, str], ...]
    healthcheck: HealthCheck | None  # None: no health check (ready once running)
    shm_size_mib: int
    memory_mib: int | None
    cpus: float | None
    wait: bool
    wait_timeout_s: int
    #: json-file rotation: (("max-file", "5"), ("max-size", "100m"))
    log_opts: tuple[tuple[str, str], ...] = ()
    #: SIGTERM, then this long before SIGKILL, when the container is stopped or deleted
    stop_grace_s: int = 30
    #: how long pulling the image may take
    pull_timeout_s: int = 3600
    #: the replica's previous host when it moves to another one (created there before the old is deleted)
    moved_from: str | None = None
    restart: str = "unless-stopped"
    network_mode: str = "host"
    log_driver: str = "json-file"
    #: a tiny init as PID 1: engines that fork workers get their zombies reaped and signals forwarded
    init: bool = True
    #: the model fetch this replica waits for (None: a local path, nothing to fetch)
    fetch: FetchSpec | None = None
    #: files written into the container before it starts: (path, content, octal permissions)
    uploads: tuple[tuple[str, str, str], ...] = ()
    #: the process's working folder (None: the image's)
    working_dir: str | None = None

    @property
    def key(self) -> str:
        return replica_key(self.deployment, self.replica)

    @property
    def waits_for_fetch_outputs(self) -> bool:
        """The command holds values only the fetch knows (a glob's file, the context cap)."""
        return self.fetch is not None and (self.fetch.model_path is None or CONTEXT_CAP in self.command
                                           or any(mindie.PENDING_SEQ_LEN in c for _, c, _ in self.uploads))

    @property
    def endpoint(self) -> str:
        return f"http://{url_host(self.address)}:{self.port}"


def finalize_command(spec: ContainerSpec, model_path: str, max_model_len: int | None) -> list[str]:
    """The command with what the fetch found: the resolved model path in place of a glob's
    placeholder, and GPUStack's context cap kept (value 8192) only when config.json allows more."""
    pending = pending_path(spec.fetch) if spec.fetch is not None and spec.fetch.model_path is None else None
    out: list[str] = []
    args = list(spec.command)
    i = 0
    while i < len(args):
        if i + 1 < len(args) and args[i + 1] == CONTEXT_CAP:
            if max_model_len is not None and max_model_len > CAP_TOKENS:
                out += [args[i], str(CAP_TOKENS)]
            i += 2
            continue
        out.append(args[i].replace(pending, model_path) if pending else args[i])
        i += 1
    return out


def finalize_uploads(spec: ContainerSpec, model_path: str, max_model_len: int | None) -> list[tuple[str, str, str]]:
    """The files with what the fetch found (MindIE's sequence lengths, the resolved model path)."""
    pending = pending_path(spec.fetch) if spec.fetch is not None and spec.fetch.model_path is None else None
    out = []
    for path, content, mode in spec.uploads:
        content = mindie.settle(content, max_model_len)
        out.append((path, content.replace(pending, model_path) if pending else content, mode))
    return out


def container_name(stack: str, deployment: str, replica: int) -> str:
    """Scoped by stack: two stacks on one inventory never fight over a container name."""
    return f"gpufleet-{stack}-{deployment}-{replica}"


def render_container(stack: str, w: Workload, a: Assignment, host: Host, settings: StackFile,
                     moved_from: str | None = None) -> ContainerSpec:
    """``moved_from``: the host this replica leaves in the change being applied (created before the old goes)."""
    spec = w.spec
    source = spec.model
    cache = host.model_cache
    env: dict[str, str] = {}
    mounts = [Mount(cache, cache, False, create=True)]
    if source.kind == "huggingface":
        env["HF_HOME"] = f"{cache}/huggingface"
    elif source.kind == "modelscope":
        env["MODELSCOPE_CACHE"] = f"{cache}/modelscope"
    else:
        mounts.append(Mount(source.ref, source.ref, True))
    env.update(w.env)  # the user's and the backend's settings win over our defaults
    exposure = VENDORS[a.vendor].expose(_device_refs(host, a)) if a.vendor else Exposure()
    env.update(exposure.env)
    is_mindie = w.builtin_command and w.backend.name == "MindIE"
    if is_mindie:
        env = mindie.environment(env)

    secret_env = tuple(sorted((k, v[len(SECRET_PREFIX):]) for k, v in env.items() if v.startswith(SECRET_PREFIX)))
    plain_env = tuple(sorted((k, v) for k, v in env.items() if not v.startswith(SECRET_PREFIX)))
    template_env = dict(plain_env)
    fetch = render_fetch(host, source, settings.model_fetch)
    # GPUStack passes the downloaded model's local path (resolved_path), never the repository id
    model_path = source.ref if fetch is None else fetch.model_path or pending_path(fetch)
    variables = Variables(model_path=model_path, model_name=w.model_name, port=a.port, worker_ip=host.address,
                          gpu_count=len(a.gpus), gpu_ids=exposure.gpu_ids, env=template_env)
    secrets = [k for k, _ in secret_env]
    entrypoint = tuple(render(w.entrypoint, variables, secrets)) if w.entrypoint else None
    cap = _memory_fraction(w, a, host)
    builder = BUILDERS.get(w.backend.name) if w.builtin_command else None
    uploads: tuple[tuple[str, str, str], ...] = ()
    working_dir = None
    if is_mindie:  # no parameters: stack.workloads refuses them
        # GPUStack reads the model's config.json for the sequence lengths: after the fetch
        seq = mindie.PENDING_SEQ_LEN if fetch is not None and fetch.filename is None else mindie.MAX_SEQ_LEN
        text = mindie.config_text(mindie.config(model_path, w.model_name, host.address, a.port, len(a.gpus), seq))
        uploads = ((mindie.CONFIG_PATH, text, "0640"),)
        entrypoint = ("/usr/bin/bash", "-c", mindie.SERVE_SCRIPT, "gpustack-serving-command-script")
        command = (mindie.DAEMON,)
        working_dir = mindie.WORKING_DIR
    elif builder is not None:
        # GPUStack builds its built-ins' command lines itself (backends.builtins)
        first = exposure.gpu_ids.split(",")[0] if exposure.gpu_ids else None
        # GPUStack reads config.json in the model folder; a single fetched file has none
        reads_config = fetch is not None and fetch.filename is None
        command = tuple(builder(BuiltinContext(model_path, w.model_name, host.address, a.port, len(a.gpus),
                                               w.version, tuple(w.parameters), dict(plain_env), cap, first,
                                               context_cap=reads_config)))
    else:
        command = tuple(render(w.run_command, variables, secrets)) + tuple(w.parameters)
        if cap is not None:
            knob = knob_for(w.backend.name)
            assert knob is not None
            command += (f"{knob.flag}={cap}",) if w.backend.spec.parameter_format == "equal" else (knob.flag, str(cap))
    mounts += [Mount(p, p, True) for p in exposure.mounts]

    labels = {
        LABEL_PREFIX + "stack": stack,
        LABEL_PREFIX + "deployment": w.name,
        LABEL_PREFIX + "replica": str(a.replica),
        LABEL_PREFIX + "backend": w.backend.name,
        LABEL_PREFIX + "version": w.version,
        LABEL_PREFIX + "gpus": ",".join(map(str, a.gpus)),
        LABEL_PREFIX + "vendor": a.vendor or "cpu",
        LABEL_PREFIX + "port": str(a.port),
    }
    r = spec.resources
    health = settings.health
    return ContainerSpec(
        deployment=w.name, replica=a.replica, host=host.name, address=host.address, port=a.port,
        name=container_name(stack, w.name, a.replica), image=w.image, entrypoint=entrypoint, command=command,
        env=plain_env, secret_env=secret_env, device_requests=exposure.requests, devices=exposure.nodes,
        mounts=tuple(sorted(set(mounts), key=lambda m: m.target)), labels=tuple(sorted(labels.items())),
        healthcheck=health_check(host.address, a.port, w.health_check_path, health) if w.health_check_path else None,
        shm_size_mib=r.shm, memory_mib=r.ram, cpus=r.cpus, wait=health.wait, wait_timeout_s=health.timeout,
        log_opts=(("max-file", str(settings.logs.max_file)), ("max-size", settings.logs.max_size)),
        stop_grace_s=settings.rollout.stop_grace, pull_timeout_s=settings.images.pull_timeout, moved_from=moved_from,
        fetch=fetch, uploads=uploads, working_dir=working_dir,
    )


def _memory_fraction(w: Workload, a: Assignment, host: Host) -> float | None:
    """A shared claim's memory fraction (claim / device size) to set on the engine, or None; for an
    SGLang replica sized by ``auto``, SGLang's static fraction as GPUStack computes and passes it.

    None also when the user set the engine's flag themselves at or below the claim; above it is
    refused (backends.memory).
    """
    knob = knob_for(w.backend.name)
    if w.fit is not None and w.fit.engine_fraction is not None and a.whole:
        return w.fit.engine_fraction  # SGLang sized by auto: the fraction GPUStack computed and passes
    if a.whole or not a.gpus or knob is None or w.custom or w.spec.resources.share != "enforced":
        return None
    device = _group(host, a).vram_mib
    cap = fraction(a.vram_mib, device)
    given = find_parameter(w.parameters, knob.flag.lstrip("-"))
    if given is None:
        return cap
    try:
        too_much = float(given) > cap
    except ValueError:
        too_much = False  # the engine will reject it; not ours to judge
    if too_much:
        raise InputError([w.spec_problem(("backend_parameters",), (
            f"{knob.flag} {given} lets replica {a.replica} take {float(given) * device / 1024:.1f} GiB of a "
            f"{device / 1024:.0f} GiB GPU on {host.name}, but it claims {a.vram_mib / 1024:.1f} GiB "
            f"(at most {cap}); remove the flag (gpufleet sets it) or raise resources.vram"))])
    return None


def _group(host: Host, a: Assignment):
    return next(g for g in host.groups if g.vendor == a.vendor and {d.index for d in g.devices} >= set(a.gpus))


def _device_refs(host: Host, a: Assignment) -> tuple[DeviceRef, ...]:
    by_index = {d.index: d for d in _group(host, a).devices}
    return tuple(DeviceRef(i, by_index[i].uuid, by_index[i].pci_bus_id, by_index[i].render_node) for i in a.gpus)


#: the health check's program: constant, its target arrives as arguments ($1 url, $2 host, $3 port,
#: $4 path), so nothing from a file is ever spliced into shell text. It works in images without
#: curl: curl, else wget, else python3, else bash's /dev/tcp.
HEALTH_SCRIPT = (
    'curl -fsS -o /dev/null "$1" 2>/dev/null'
    ' || wget -q -O /dev/null "$1" 2>/dev/null'
    " || python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \"$1\" 2>/dev/null"
    " || bash -c 'exec 3<>\"/dev/tcp/$0/$1\" && printf \"GET %s HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n\" \"$2\" \"$0\" >&3"
    " && head -n 1 <&3 | grep -q \" 200 \"' \"$2\" \"$3\" \"$4\""
)


def url_host(address: str) -> str:
    """An address as it stands in a URL: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def health_check(address: str, port: int, path: str, health: Health) -> HealthCheck:
    """An HTTP check of the replica's own endpoint, in exec form: ``sh -c SCRIPT`` with the target as data."""
    url = f"http://{url_host(address)}:{port}{path}"
    test = ("CMD", "/bin/sh", "-c", HEALTH_SCRIPT, "gpufleet-health", url, address, str(port), path)
    return HealthCheck(test, health.interval, 10, health.start_period, health.retries)
