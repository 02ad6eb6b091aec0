"""The pulumi-docker provider's container create, ported for tests that cannot run the provider.

pulumi-docker 5.x is a bridge over terraform-provider-docker v4 (kreuzwerker); its plugin
cannot be downloaded here. This module stands in for it in the fleet tests: ``create_body``
turns the inputs the program registers for a ``docker.Container`` into the Engine API body
the provider sends (``resourceDockerContainerCreate`` in internal/provider/
resource_docker_container_funcs.go, v4.0.0). Each rule names the provider function it mirrors.
An input this port does not know fails the test, so a new field cannot slip past it.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

#: container inputs the program may register, and that this port understands
KNOWN_INPUTS = {"name", "image", "command", "entrypoints", "envs", "network_mode", "restart", "shm_size", "labels",
                "mounts", "volumes", "devices", "device_requests", "healthcheck", "wait", "wait_timeout", "memory",
                "memory_swap", "cpus", "log_driver", "log_opts", "init", "stop_timeout", "stop_signal",
                "destroy_grace_seconds", "must_run", "max_retry_count"}

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10 ** 9, "m": 60 * 10 ** 9, "h": 3600 * 10 ** 9}


def go_parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` (nanoseconds), which the provider's create uses for health-check times."""
    if text in ("0", ""):
        return 0
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"time: invalid duration {text!r}")
    return int(sum(Decimal(n) * _UNITS[u] for n, u in parts))


def go_duration_string(nanos: int) -> str:
    """Go's ``time.Duration.String()``, which the provider's read writes back into state."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < 10 ** 9:
        for unit, size in (("ms", 10 ** 6), ("µs", 10 ** 3), ("ns", 1)):
            if nanos >= size:
                return sign + _trim(Decimal(nanos) / size) + unit
    hours, rest = divmod(nanos, 3600 * 10 ** 9)
    minutes, rest = divmod(rest, 60 * 10 ** 9)
    seconds = _trim(Decimal(rest) / 10 ** 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _trim(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return text


def parse_cpus(text: str) -> int:
    """docker/opts.ParseCPUs: a decimal string -> NanoCPUs (the provider's create for ``cpus``)."""
    value = Decimal(text)
    nano = value * 10 ** 9
    if nano != nano.to_integral_value():
        raise ValueError("value is too precise")
    return int(nano)


def get(obj: Any, key: str, default: Any = None) -> Any:
    """Read an input from a plain dict or a pulumi ``*Args`` object."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    value = getattr(obj, key, default)
    return default if value is None else value


def create_body(args: dict, image_id: str) -> dict:
    """The Engine API ``POST /containers/create`` body the provider sends for these inputs."""
    unknown = set(args) - KNOWN_INPUTS
    assert not unknown, f"provider_port does not know how the provider sends {sorted(unknown)}; port it"
    config: dict[str, Any] = {"Image": image_id}
    # resourceDockerContainerCreate: env is a set, command/entrypoint lists
    if args.get("envs"):
        config["Env"] = list(args["envs"])
    if args.get("command"):
        assert all(c != "" for c in args["command"]), "values for command may not be empty"
        config["Cmd"] = list(args["command"])
    if args.get("entrypoints"):
        config["Entrypoint"] = list(args["entrypoints"])
    if args.get("labels"):  # labelSetToMap
        config["Labels"] = {get(label, "label"): get(label, "value") for label in args["labels"]}
    if args.get("stop_signal"):
        config["StopSignal"] = args["stop_signal"]
    if args.get("stop_timeout") is not None:
        config["StopTimeout"] = args["stop_timeout"]
    hc = args.get("healthcheck")
    if hc is not None:  # healthcheck: durations through time.ParseDuration
        config["Healthcheck"] = {
            "Test": list(get(hc, "tests", [])),
            "Interval": go_parse_duration(get(hc, "interval", "0s")),
            "Timeout": go_parse_duration(get(hc, "timeout", "0s")),
            "StartPeriod": go_parse_duration(get(hc, "start_period", "0s")),
            "Retries": get(hc, "retries", 0),
        }
    binds, volumes = [], {}
    for v in args.get("volumes") or []:  # volumeSetToDockerVolumes
        rw = "ro" if get(v, "read_only", False) else "rw"
        volumes[get(v, "container_path")] = {}
        binds.append(f"{get(v, 'host_path')}:{get(v, 'container_path')}:{rw}")
    if volumes:
        config["Volumes"] = volumes
    host: dict[str, Any] = {
        "RestartPolicy": {"Name": args.get("restart", "no"), "MaximumRetryCount": args.get("max_retry_count", 0)},
        "Mounts": [{"Type": get(m, "type"), "Target": get(m, "target"), "Source": get(m, "source"),
                    "ReadOnly": bool(get(m, "read_only", False))} for m in args.get("mounts") or []],
        "LogConfig": {"Type": args.get("log_driver", "")},
    }
    if binds:
        host["Binds"] = binds
    if args.get("devices"):  # deviceSetToDockerDevices
        host["Devices"] = [{"PathOnHost": get(d, "host_path"),
                            "PathInContainer": get(d, "container_path") or get(d, "host_path"),
                            "CgroupPermissions": get(d, "permissions", "")} for d in args["devices"]]
    if args.get("device_requests"):  # deviceRequestsSetToDockerRequests
        host["DeviceRequests"] = [{"Driver": get(r, "driver", ""), "Count": get(r, "count", 0),
                                   "DeviceIDs": list(get(r, "device_ids", [])),
                                   "Capabilities": [list(get(r, "capabilities", []))]}
                                  for r in args["device_requests"]]
    if args.get("memory"):
        host["Memory"] = args["memory"] * 1024 * 1024
    if args.get("memory_swap"):
        swap = args["memory_swap"]
        host["MemorySwap"] = swap * 1024 * 1024 if swap > 0 else swap
    if args.get("shm_size"):
        host["ShmSize"] = args["shm_size"] * 1024 * 1024
    if args.get("cpus"):
        host["NanoCpus"] = parse_cpus(args["cpus"])
    if args.get("log_opts"):
        host["LogConfig"]["Config"] = dict(args["log_opts"])
    if args.get("network_mode"):
        host["NetworkMode"] = args["network_mode"]
    if args.get("init") is not None:
        host["Init"] = args["init"]
    config["HostConfig"] = host
    return config
