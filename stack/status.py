"""Compare what runs with what the plan says: the health gate after `pulumi up`.

Pure: the plan's containers and what each host reported go in, findings come out. Each finding
has a kind (missing, unexpected, stale, stopped, restarting, unhealthy, starting, endpoint,
unreachable) and a sentence; ``starting`` alone is not a problem.
"""
from __future__ import annotations

from dataclasses import dataclass

from .containers import LABEL_PREFIX, ContainerSpec

PROBLEMS = frozenset({"missing", "unexpected", "stale", "stopped", "restarting", "unhealthy", "endpoint",
                      "unreachable"})
#: labels whose difference means the container is not the one the plan wants
COMPARED_LABELS = ("deployment", "replica", "backend", "version", "gpus", "port", "vendor")


@dataclass(frozen=True)
class Finding:
    host: str
    container: str
    kind: str
    message: str

    @property
    def problem(self) -> bool:
        return self.kind in PROBLEMS


def health_url(spec: ContainerSpec) -> str | None:
    """The URL the container's health check requests (its arguments are url, host, port, path); None without one."""
    return spec.healthcheck.test[5] if spec.healthcheck else None


def compare(planned: list[ContainerSpec], observed: dict, unreachable: dict[str, str],
            endpoints: dict[str, bool]) -> list[Finding]:
    """``observed``: host -> list of inventory.host_state.Observed; ``endpoints``: container name -> answered."""
    findings = []
    for host, reason in sorted(unreachable.items()):
        findings.append(Finding(host, "", "unreachable", f"{host}: {reason}"))
    wanted = {(c.host, c.name): c for c in planned}
    for host, containers in sorted(observed.items()):
        for o in sorted(containers, key=lambda o: o.name):
            spec = wanted.get((host, o.name))
            if spec is None:
                findings.append(Finding(host, o.name, "unexpected", f"{o.name} on {host} is not in the plan (left "
                                                                    "over from an interrupted up, or started by hand)"))
                continue
            labels = dict(spec.labels)
            differ = [k for k in COMPARED_LABELS
                      if o.labels.get(LABEL_PREFIX + k) != labels.get(LABEL_PREFIX + k)]
            if differ:
                findings.append(Finding(host, o.name, "stale", f"{o.name} on {host} differs from the plan in "
                                        + ", ".join(f"{k} ({o.labels.get(LABEL_PREFIX + k)} → "
                                                    f"{labels.get(LABEL_PREFIX + k)})" for k in differ)
                                        + "; run pulumi up"))
            if o.state == "restarting":
                findings.append(Finding(host, o.name, "restarting", f"{o.name} on {host} is restarting (last exit "
                                                                    f"{o.exit_code})"))
            elif o.state != "running":
                findings.append(Finding(host, o.name, "stopped", f"{o.name} on {host} is {o.state} (exit "
                                                                 f"{o.exit_code})"))
            elif o.health == "unhealthy":
                findings.append(Finding(host, o.name, "unhealthy", f"{o.name} on {host} is unhealthy"))
            elif o.health == "starting":
                findings.append(Finding(host, o.name, "starting", f"{o.name} on {host} is still starting"))
            elif endpoints.get(o.name) is False:
                findings.append(Finding(host, o.name, "endpoint", f"{health_url(spec)} does not answer from {host}"))
    for (host, name), spec in sorted(wanted.items()):
        if host in unreachable:
            continue
        if not any(o.name == name for o in observed.get(host, [])):
            findings.append(Finding(host, name, "missing", f"{name} ({spec.key}) is not on {host}; run pulumi up"))
    return findings
