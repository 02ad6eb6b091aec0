"""The SSH options every docker call uses: trust only the inventory's known_hosts, never share across trust."""
from __future__ import annotations

from dataclasses import replace

from components.gpu_host import control_path, ssh_options, ssh_url
from stack.containers import health_check
from stack.schema import Health

from .fleets import host


def _opts(h) -> dict:
    opts = ssh_options(h)
    return {opts[i + 1].split("=", 1)[0]: opts[i + 1].split("=", 1)[1] for i, o in enumerate(opts) if o == "-o"}


def test_only_the_inventorys_known_hosts_are_trusted():
    h = host("a")
    h = replace(h, ssh=replace(h.ssh, known_hosts="inventory/known_hosts"))
    o = _opts(h)
    assert o["StrictHostKeyChecking"] == "yes" and o["GlobalKnownHostsFile"] == "/dev/null"
    assert o["UserKnownHostsFile"] == "inventory/known_hosts"
    # no known_hosts in the inventory: nothing is trusted (not ~/.ssh/known_hosts)
    assert _opts(host("b"))["UserKnownHostsFile"] == "/dev/null"


def test_a_shared_connection_is_keyed_on_known_hosts_and_identity():
    h = host("a")
    base = control_path(h)
    assert control_path(replace(h, ssh=replace(h.ssh, known_hosts="other"))) != base
    assert control_path(replace(h, ssh=replace(h.ssh, identity_file="other_key"))) != base
    assert control_path(replace(h, ssh=replace(h.ssh, port=2222))) != base
    assert control_path(h) == base  # stable: the same plan on every run
    # the socket path fits the unix limit (104 bytes on macOS, 108 on Linux) even in a long home
    assert len(base.replace("~", "/home/" + "u" * 60)) < 104


def test_ipv6_addresses_are_bracketed():
    h = host("v6", address="fd00::5")
    assert ssh_url(h) == "ssh://gpufleet@[fd00::5]:22"
    assert ssh_url(host("v4", address="127.0.0.9")) == "ssh://gpufleet@127.0.0.9:22"

    check = health_check("fd00::5", 40000, "/v1/models", Health())
    assert check.test[5] == "http://[fd00::5]:40000/v1/models" and check.test[6] == "fd00::5"
