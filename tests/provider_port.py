"""The pulumi-docker provider's container create, read and diff, ported for tests.

pulumi-docker 5.x is a bridge over terraform-provider-docker v4 (kreuzwerker); its plugin cannot
be downloaded here, so this module stands in for it in the fleet tests, and only there:

- ``tf_inputs``: registered inputs in the provider's field names (the bridge's renames);
- ``create_body``: the Engine API body of ``resourceDockerContainerCreate``;
- ``read_state``: the state ``resourceDockerContainerRead`` writes from ``docker inspect``
  (with ``getDockerContainerMounts``, ``flattenDevices``, ``flattenDeviceRequests``,
  ``nanoInt64ToDecimalString`` and Go's ``time.Duration.String``);
- ``diff``: configuration against that state, with the schema's defaults, sets and computed
  fields, i.e. what the next ``pulumi preview`` would show.

All from internal/provider/resource_docker_container_funcs.go, _structures.go, helpers.go and
resource_docker_container.go at v4.0.0. An input this port does not know fails the test, so a
new field cannot slip past it.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

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
        value = obj.get(key, default)
    else:
        value = getattr(obj, key, default)
    return default if value is None else value


# ----------------------------------------------------------------------------- inputs -> provider fields

#: the Pulumi names of container inputs (Python keyword or registered camelCase) -> the provider's
#: schema names (pulumi-docker's bridge renames envs, entrypoints and healthcheck.tests)
_NAMES = {"envs": "env", "entrypoints": "entrypoint", "networkMode": "network_mode", "shmSize": "shm_size",
          "deviceRequests": "device_requests", "waitTimeout": "wait_timeout", "memorySwap": "memory_swap",
          "logDriver": "log_driver", "logOpts": "log_opts", "stopTimeout": "stop_timeout",
          "destroyGraceSeconds": "destroy_grace_seconds", "workingDir": "working_dir", "uploads": "upload"}
_NESTED = {"hostPath": "host_path", "containerPath": "container_path", "readOnly": "read_only",
           "deviceIds": "device_ids", "tests": "test", "startPeriod": "start_period",
           "device_ids": "device_ids", "host_path": "host_path", "container_path": "container_path",
           "read_only": "read_only", "start_period": "start_period"}
KNOWN = {"name", "image", "command", "entrypoint", "env", "network_mode", "restart", "shm_size", "labels", "mounts",
         "volumes", "devices", "device_requests", "healthcheck", "wait", "wait_timeout", "memory", "memory_swap",
         "cpus", "log_driver", "log_opts", "init", "stop_timeout", "destroy_grace_seconds", "working_dir", "upload"}


def _plain(value: Any) -> Any:
    """A registered value without Pulumi's secret envelope, with Args objects as dicts."""
    if isinstance(value, dict) and "4dabf18193072939515e22adb298388d" in value:
        return _plain(value["value"])
    if isinstance(value, dict):
        return {_NESTED.get(k, k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dict__") and type(value).__module__.startswith("pulumi_docker"):
        import pulumi
        keys = [k for k in dir(value) if not k.startswith("_") and not callable(getattr(value, k))]
        return {_NESTED.get(k, k): _plain(pulumi.get(value, k)) for k in keys if pulumi.get(value, k) is not None}
    return value


_INTS = {"shm_size", "memory", "memory_swap", "stop_timeout", "destroy_grace_seconds", "wait_timeout"}


def tf_inputs(args: dict) -> dict:
    """Container inputs (``container_args()`` or what the program registered) in the provider's names.

    Registered numbers arrive as floats (Pulumi's wire format); the bridge turns them into the
    schema's integers, and so does this.
    """
    out = {_NAMES.get(k, k): _plain(v) for k, v in args.items() if v is not None}
    if "healthcheck" in out and "tests" in out["healthcheck"]:
        out["healthcheck"]["test"] = out["healthcheck"].pop("tests")
    for key in _INTS & set(out):
        out[key] = int(out[key])
    if "healthcheck" in out and "retries" in out["healthcheck"]:
        out["healthcheck"]["retries"] = int(out["healthcheck"]["retries"])
    unknown = set(out) - KNOWN
    assert not unknown, f"provider_port does not know how the provider handles {sorted(unknown)}; port it"
    return out


# ----------------------------------------------------------------------------- create

def create_body(tf: dict) -> dict:
    """The Engine API ``POST /containers/create`` body: ``resourceDockerContainerCreate`` (v4.0.0)."""
    config: dict[str, Any] = {"Image": tf["image"]}
    if tf.get("env"):  # env: a set of NAME=value
        config["Env"] = list(tf["env"])
    if tf.get("command"):
        assert all(c != "" for c in tf["command"]), "values for command may not be empty"
        config["Cmd"] = list(tf["command"])
    if tf.get("entrypoint"):
        config["Entrypoint"] = list(tf["entrypoint"])
    if tf.get("labels"):  # labelSetToMap
        config["Labels"] = {label["label"]: label["value"] for label in tf["labels"]}
    if tf.get("stop_timeout") is not None:
        config["StopTimeout"] = tf["stop_timeout"]
    if tf.get("working_dir"):
        config["WorkingDir"] = tf["working_dir"]
    hc = tf.get("healthcheck")
    if hc:  # durations through time.ParseDuration; schema defaults "0s" and 0
        config["Healthcheck"] = {
            "Test": list(hc.get("test", [])),
            "Interval": go_parse_duration(hc.get("interval", "0s")),
            "Timeout": go_parse_duration(hc.get("timeout", "0s")),
            "StartPeriod": go_parse_duration(hc.get("start_period", "0s")),
            "StartInterval": go_parse_duration(hc.get("start_interval", "0s")),
            "Retries": hc.get("retries", 0),
        }
    binds, volumes = [], {}
    for v in tf.get("volumes") or []:  # volumeSetToDockerVolumes: host:container:rw|ro
        volumes[v["container_path"]] = {}
        binds.append(f"{v['host_path']}:{v['container_path']}:{'ro' if v.get('read_only') else 'rw'}")
    if volumes:
        config["Volumes"] = volumes
    host: dict[str, Any] = {
        "RestartPolicy": {"Name": tf.get("restart", "no"), "MaximumRetryCount": 0},
        "Mounts": [{"Type": m["type"], "Target": m["target"], "Source": m.get("source", ""),
                    "ReadOnly": bool(m.get("read_only", False))} for m in tf.get("mounts") or []],
        "LogConfig": {"Type": tf.get("log_driver", "")},
    }
    if binds:
        host["Binds"] = binds
    if tf.get("devices"):  # deviceSetToDockerDevices: container_path defaults to host_path
        host["Devices"] = [{"PathOnHost": d["host_path"], "PathInContainer": d.get("container_path") or d["host_path"],
                            "CgroupPermissions": d.get("permissions", "rwm")} for d in tf["devices"]]
    if tf.get("device_requests"):  # deviceRequestsSetToDockerRequests
        host["DeviceRequests"] = [{"Driver": r.get("driver", "cdi"), "Count": r.get("count", 0),
                                   "DeviceIDs": list(r.get("device_ids", [])),
                                   "Capabilities": [list(r.get("capabilities", []))]}
                                  for r in tf["device_requests"]]
    if tf.get("memory"):
        host["Memory"] = tf["memory"] * 1024 * 1024
    if tf.get("memory_swap"):
        swap = tf["memory_swap"]
        host["MemorySwap"] = swap * 1024 * 1024 if swap > 0 else swap
    if tf.get("shm_size"):
        host["ShmSize"] = tf["shm_size"] * 1024 * 1024
    if tf.get("cpus"):
        host["NanoCpus"] = parse_cpus(tf["cpus"])
    if tf.get("log_opts"):
        host["LogConfig"]["Config"] = dict(tf["log_opts"])
    if tf.get("network_mode"):
        host["NetworkMode"] = tf["network_mode"]
    if "init" in tf:
        host["Init"] = tf["init"]
    config["HostConfig"] = host
    return config


# ----------------------------------------------------------------------------- read

def nano_to_decimal_string(nanos: int) -> str:
    """``nanoInt64ToDecimalString`` (internal/provider/helpers.go, v4.0.0), character for character."""
    if nanos == 0:
        return "0"
    whole, frac = divmod(nanos, 10 ** 9)
    text = f"{whole}.{frac:09d}"  # big.Rat.FloatString(9)
    if text.count("0") == 9:
        tenths = (nanos * 10 + 5 * 10 ** 8) // 10 ** 9  # FloatString(1) rounds half away from zero
        return f"{tenths // 10}.{tenths % 10}"
    return text.rstrip("0")


#: fields the provider's read does not set: state keeps what was configured (see the comments in
#: resourceDockerContainerRead: env and labels "are taken over from the Docker image", volumes
#: are not read, destroy_grace_seconds "can't be imported", wait/wait_timeout are create-only)
#: upload: written once at create ("upload" can't be imported), kept from the configuration
NOT_READ = {"env", "labels", "volumes", "destroy_grace_seconds", "wait", "wait_timeout", "upload"}


def read_state(inspect: dict, tf: dict) -> dict:
    """State after ``resourceDockerContainerRead`` for the fields gpufleet sets; NOT_READ keep the config."""
    cfg, host = inspect["Config"], inspect["HostConfig"]
    state: dict[str, Any] = {k: tf[k] for k in NOT_READ if k in tf}
    state["name"] = inspect["Name"].lstrip("/")
    # image: Config.Image, or .Image when the configured value is an ID (sha256:...)
    state["image"] = inspect["Image"] if str(tf.get("image", "")).startswith("sha256:") else cfg["Image"]
    state["command"] = cfg.get("Cmd") or []
    state["entrypoint"] = cfg.get("Entrypoint") or []
    state["restart"] = host["RestartPolicy"]["Name"]
    state["init"] = bool(host.get("Init"))
    state["mounts"] = [{"target": m["Target"], "source": m["Source"], "type": m["Type"],
                        "read_only": m.get("ReadOnly", False)} for m in host.get("Mounts") or []]  # getDockerContainerMounts
    # flattenDevices: host_path and permissions; container_path only where configured
    configured = tf.get("devices") or []
    state["devices"] = []
    for i, d in enumerate(host.get("Devices") or []):
        item = {"host_path": d["PathOnHost"], "permissions": d["CgroupPermissions"]}
        if i < len(configured) and configured[i].get("container_path"):
            item["container_path"] = d["PathInContainer"]
        state["devices"].append(item)
    state["device_requests"] = []  # flattenDeviceRequests
    for r in host.get("DeviceRequests") or []:
        item = {"driver": r["Driver"], "count": r["Count"]}
        if r.get("DeviceIDs"):
            item["device_ids"] = r["DeviceIDs"]
        if r.get("Capabilities") and r["Capabilities"][0]:
            item["capabilities"] = r["Capabilities"][0]
        state["device_requests"].append(item)
    state["memory"] = host.get("Memory", 0) // 1024 // 1024
    swap = host.get("MemorySwap", 0)
    state["memory_swap"] = swap // 1024 // 1024 if swap > 0 else swap
    state["shm_size"] = host.get("ShmSize", 0) // 1024 // 1024
    if host.get("NanoCpus", 0) > 0:
        state["cpus"] = nano_to_decimal_string(host["NanoCpus"])
    state["log_driver"] = host["LogConfig"]["Type"]
    state["log_opts"] = host["LogConfig"].get("Config") or {}
    state["network_mode"] = host.get("NetworkMode", "")
    if cfg.get("Healthcheck") is not None:
        hc = cfg["Healthcheck"]
        state["healthcheck"] = {"test": hc.get("Test") or [], "interval": go_duration_string(hc.get("Interval", 0)),
                                "timeout": go_duration_string(hc.get("Timeout", 0)),
                                "start_period": go_duration_string(hc.get("StartPeriod", 0)),
                                "start_interval": go_duration_string(hc.get("StartInterval", 0)),
                                "retries": hc.get("Retries", 0)}
    state["stop_timeout"] = cfg.get("StopTimeout")
    state["working_dir"] = cfg.get("WorkingDir", "")
    return state


def upload_tar(tf: dict) -> bytes | None:
    """The archive ``resourceDockerContainerCreate`` copies to "/" for ``upload``: one entry per file,
    named by its path, mode from ``permissions`` (octal), else 0744 if executable, else 0644."""
    import io
    import tarfile

    uploads = tf.get("upload") or []
    if not uploads:
        return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for u in uploads:
            data = u["content"].encode()
            info = tarfile.TarInfo(u["file"])
            info.size = len(data)
            info.mode = int(u["permissions"], 8) if u.get("permissions") else 0o744 if u.get("executable") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ----------------------------------------------------------------------------- diff

#: schema defaults, applied to the configuration before comparing (as Terraform does)
_DEFAULTS = {"healthcheck": {"interval": "0s", "timeout": "0s", "start_period": "0s", "start_interval": "0s",
                             "retries": 0},
             "devices": {"permissions": "rwm"}, "device_requests": {"driver": "cdi", "count": 0}}
#: TypeSet fields (order does not matter), and Optional+Computed ones (absent config = no diff)
_SETS = {"env", "labels", "mounts", "volumes", "devices", "device_requests"}
_COMPUTED = {"command", "entrypoint", "env", "labels", "shm_size", "log_driver", "init", "stop_timeout", "working_dir",
             "healthcheck", "image", "name"}
_EMPTY = (None, 0, "", [], {}, False)


def _canon(field: str, value: Any) -> Any:
    if field in _SETS and isinstance(value, list):
        items = []
        for item in value:
            if isinstance(item, dict):
                item = {**_DEFAULTS.get(field, {}), **item}
                item = {k: sorted(v) if k in ("device_ids", "capabilities") else v for k, v in item.items()}
            items.append(item)
        return sorted(items, key=repr)
    if field == "healthcheck" and isinstance(value, dict):
        return {**_DEFAULTS["healthcheck"], **value}
    return value


def diff(tf: dict, state: dict) -> dict[str, tuple[Any, Any]]:
    """Fields whose configuration differs from state: what the next preview would show as a change.

    A field absent from the configuration differs when it is not computed and state holds a
    non-empty value (memory without memory_swap: state reads back Docker's 2 x memory).
    """
    out = {}
    for field in sorted(set(tf) | set(state)):
        if field in NOT_READ:
            continue
        wanted, got = tf.get(field), state.get(field)
        if field not in tf:
            if field not in _COMPUTED and got not in _EMPTY:
                out[field] = (None, got)
            continue
        if field not in state:
            if field not in _COMPUTED:
                out[field] = (wanted, None)
            continue
        if _canon(field, wanted) != _canon(field, got):
            out[field] = (wanted, got)
    return out
