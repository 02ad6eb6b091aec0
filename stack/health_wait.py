"""Wait for a container to turn healthy, and when it does not, say why: its state and last log lines.

Plain logic over a ``run(argv) -> (status, stdout, stderr)`` callable, so the same code runs
over paramiko in `pulumi up` (components.health_gate) and against a real engine in the tests.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from documents.problems import printable

Runner = Callable[[list[str]], tuple[int, str, str]]

LOG_LINES = 30


class NotHealthy(Exception):
    """The container did not turn healthy; the message is what an operator needs to act."""


def wait_until_healthy(run: Runner, name: str, timeout_s: float, interval_s: float = 5,
                       where: str = "", clock=time.monotonic, sleep=time.sleep) -> dict:
    """Poll ``docker inspect`` until healthy; raise NotHealthy with state and logs on exit or timeout."""
    deadline = clock() + timeout_s
    state: dict = {}
    while True:
        status, out, err = run(["docker", "inspect", "--format", "{{json .State}}", name])
        if status != 0:
            raise NotHealthy(f"{name}{where}: the container is gone or cannot be inspected: {printable(err.strip())}")
        state = json.loads(out)
        health = (state.get("Health") or {}).get("Status")
        if health == "healthy":
            return state
        if health is None and state.get("Running") and not state.get("Restarting"):
            return state  # no health check: ready once it runs (GPUStack's rule for such backends)
        if state.get("Restarting") or (not state.get("Running") and state.get("Status") in ("exited", "dead")):
            break  # it exited (and is being restarted): a crash, not a slow start; waiting changes nothing
        if clock() >= deadline:
            break
        sleep(interval_s)
    raise NotHealthy(explain(run, name, state, timeout_s, where))


def explain(run: Runner, name: str, state: dict, timeout_s: float, where: str = "") -> str:
    health = state.get("Health") or {}
    checks = health.get("Log") or []
    last = checks[-1] if checks else {}
    exited = state.get("Restarting") or not state.get("Running")
    headline = "exited" if exited else f"did not turn healthy within {timeout_s:g} s"
    parts = [f"{name}{where} {headline}",
             f"state {state.get('Status', '?')}"
             + (f", exit code {state.get('ExitCode')}" if exited else "")
             + (", OOM-killed" if state.get("OOMKilled") else ""),
             f"health {health.get('Status', 'none')}"
             + (f" after {health.get('FailingStreak', 0)} failing checks" if health.get("FailingStreak") else "")]
    if last:
        parts.append(f"last check exit {last.get('ExitCode')}: {printable((last.get('Output') or '').strip()[:200])}")
    if state.get("Error"):
        parts.append(f"error: {printable(state['Error'])}")
    status, out, err = run(["docker", "logs", "--tail", str(LOG_LINES), name])
    lines = (out + err).strip().splitlines()[-LOG_LINES:] if status == 0 else []
    text = "; ".join(parts)
    if lines:
        text += f"\nlast {len(lines)} log lines of {name}:\n" + "\n".join("  " + printable(ln) for ln in lines)
    return text
