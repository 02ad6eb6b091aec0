"""HealthGate: `pulumi up` moves on only when a replica is healthy, and says why when it is not.

The docker provider's own ``wait`` fails with one sentence ("container failed to be in healthy
state"). The gate is a Pulumi dynamic resource created after its container: it connects to
the host over SSH (paramiko, the inventory's known_hosts and key) and waits for the container's
health check; when the container stops or the wait times out it fails the up with the
container's state, its last health-check output and its last log lines. Its inputs include the
container's ID, so a replaced container is waited for again, and an unchanged one is not.
"""
from __future__ import annotations

from dataclasses import asdict

import pulumi
from pulumi.dynamic import CreateResult, ResourceProvider, UpdateResult

from inventory.ssh import Endpoint


def _wait(props: dict) -> None:
    # imported here: the dynamic provider runs in its own process with the project importable
    from inventory.ssh import Endpoint, connect, run
    from stack.health_wait import wait_until_healthy

    endpoint = Endpoint.from_props(props["endpoint"])
    client = connect(endpoint)
    try:
        wait_until_healthy(lambda argv: run(client, argv), props["container"], float(props["timeout_s"]),
                           float(props.get("interval_s", 5)), where=f" on {endpoint.name}")
    finally:
        client.close()


class _HealthGateProvider(ResourceProvider):
    def create(self, props):
        _wait(props)
        return CreateResult(id_=f"{props['container']}@{props['endpoint']['name']}", outs=props)

    def update(self, _id, _olds, news):
        _wait(news)
        return UpdateResult(outs=news)


class HealthGate(pulumi.dynamic.Resource):
    """Created (and updated) only once its container is healthy."""

    def __init__(self, name: str, endpoint: Endpoint, container: str, container_id: pulumi.Input[str],
                 timeout_s: int, interval_s: int, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_HealthGateProvider(), name, {
            "endpoint": asdict(endpoint), "container": container, "container_id": container_id,
            "timeout_s": timeout_s, "interval_s": interval_s}, opts)
