"""The health wait's decisions, with recorded `docker inspect` states (the fleet tests run it for real)."""
from __future__ import annotations

import json

import pytest

from stack.health_wait import NotHealthy, wait_until_healthy

STARTING = {"Status": "running", "Running": True, "Restarting": False, "ExitCode": 0,
            "Health": {"Status": "starting", "FailingStreak": 2,
                       "Log": [{"ExitCode": 1, "Output": "curl: (7) Failed to connect\n"}]}}
HEALTHY = {**STARTING, "Health": {"Status": "healthy", "FailingStreak": 0, "Log": []}}


class Host:
    def __init__(self, states, logs="loading shards 3/30\n"):
        self.states, self.logs, self.calls = list(states), logs, []

    def __call__(self, argv):
        self.calls.append(argv)
        if argv[1] == "inspect":
            return 0, json.dumps(self.states.pop(0) if len(self.states) > 1 else self.states[0]), ""
        return 0, self.logs, "\x1b[31mwarn\x1b[0m\n"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_returns_once_healthy():
    host, clock = Host([STARTING, STARTING, HEALTHY]), Clock()
    assert wait_until_healthy(host, "c", 60, 5, clock=clock, sleep=clock.sleep)["Health"]["Status"] == "healthy"
    assert clock.now == 10


def test_a_slow_start_times_out_with_its_state_checks_and_logs():
    host, clock = Host([STARTING]), Clock()
    with pytest.raises(NotHealthy) as err:
        wait_until_healthy(host, "gpufleet-demo-x-0", 30, 5, where=" on h1", clock=clock, sleep=clock.sleep)
    text = str(err.value)
    assert text.startswith("gpufleet-demo-x-0 on h1 did not turn healthy within 30 s; state running; health "
                           "starting after 2 failing checks; last check exit 1: curl: (7) Failed to connect")
    assert "loading shards 3/30" in text and "\x1b" not in text and "\\x1b[31mwarn" in text
    assert ["docker", "logs", "--tail", "30", "gpufleet-demo-x-0"] in host.calls


def test_a_crash_fails_at_once():
    crashed = {**STARTING, "Status": "restarting", "Running": True, "Restarting": True, "ExitCode": 137,
               "OOMKilled": True}
    host, clock = Host([crashed]), Clock()
    with pytest.raises(NotHealthy, match="exited; state restarting, exit code 137, OOM-killed"):
        wait_until_healthy(host, "c", 900, 5, clock=clock, sleep=clock.sleep)
    assert clock.now == 0


def test_without_a_health_check_running_is_ready_and_exiting_is_not():
    running = {"Status": "running", "Running": True, "Restarting": False, "ExitCode": 0}
    clock = Clock()
    assert wait_until_healthy(Host([running]), "c", 60, 5, clock=clock, sleep=clock.sleep)["Running"]
    exited = {"Status": "exited", "Running": False, "Restarting": False, "ExitCode": 1}
    with pytest.raises(NotHealthy, match="exited; state exited, exit code 1"):
        wait_until_healthy(Host([exited]), "c", 60, 5, clock=clock, sleep=clock.sleep)
