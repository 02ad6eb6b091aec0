"""What runs on a host, read over SSH: gpufleet's containers (labels, state, health), endpoints, GPU memory.

Plain data for ``stack/status.py`` to compare with the plan. Commands are argv, quoted for the
remote shell by ``inventory.ssh.run``; a label value is never spliced into shell text.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .ssh import run


@dataclass
class Observed:
    name: str
    image: str
    state: str  # running | exited | restarting | created | dead | paused
    health: str  # healthy | unhealthy | starting | none
    labels: dict = field(default_factory=dict)
    exit_code: int = 0


def containers(client, stack: str, timeout: float = 30) -> list[Observed]:
    """gpufleet's containers of ``stack`` on this host (running or not)."""
    status, out, err = run(client, ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=gpufleet.stack={stack}"],
                           timeout=timeout)
    if status != 0:
        raise OSError(f"docker ps failed: {(err.strip().splitlines() or ['no output'])[-1][:200]}")
    ids = out.split()
    if not ids:
        return []
    status, out, err = run(client, ["docker", "inspect", *ids], timeout=timeout)
    if status != 0:
        raise OSError(f"docker inspect failed: {(err.strip().splitlines() or ['no output'])[-1][:200]}")
    found = []
    try:
        for c in json.loads(out):
            state = c.get("State") or {}
            found.append(Observed(
                name=c["Name"].lstrip("/"), image=(c.get("Config") or {}).get("Image", ""),
                state=state.get("Status", "unknown"), health=(state.get("Health") or {}).get("Status", "none"),
                labels=(c.get("Config") or {}).get("Labels") or {}, exit_code=state.get("ExitCode", 0)))
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as e:
        # what a host prints is input like any other: a broken or foreign `docker` is reported, never a traceback
        raise OSError(f"docker inspect printed something that is not its JSON ({type(e).__name__}: "
                      f"{str(e)[:120]})") from None
    return found


def endpoint_answers(client, url: str, timeout: float = 10) -> bool:
    """GET ``url`` from the host itself (curl, else wget): what the health check and clients see."""
    status, _, _ = run(client, ["sh", "-c", 'curl -fsS -o /dev/null --max-time 5 "$1" 2>/dev/null || '
                                            'wget -q -O /dev/null -T 5 "$1"', "gpufleet-status", url], timeout=timeout)
    return status == 0


def gpu_memory_used(client, timeout: float = 20) -> dict[int, int] | None:
    """GPU index -> MiB in use, from nvidia-smi, else rocm-smi (AMD and Hygon cards); None where neither is
    installed or what it printed cannot be read."""
    from .accelerator_tools import ToolOutputError, parse_rocm_smi_used

    status, out, _ = run(client, ["sh", "-c", "if command -v nvidia-smi >/dev/null; then echo nvidia; nvidia-smi "
                                              "--query-gpu=index,memory.used --format=csv,noheader,nounits; "
                                              "elif command -v rocm-smi >/dev/null; then echo rocm; rocm-smi "
                                              "--showmeminfo vram --json; else exit 127; fi"],
                         timeout=timeout, what="nvidia-smi or rocm-smi")
    if status != 0:
        return None
    tool, _, out = out.partition("\n")
    if tool == "rocm":
        try:
            return parse_rocm_smi_used(out)
        except ToolOutputError:
            return None
    used = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            used[int(parts[0])] = int(parts[1])
    return used
