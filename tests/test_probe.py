"""gpufleet probe: parsers on recorded tool outputs, and the real thing against test hosts with faults."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inventory.accelerator_tools import (
    ToolOutputError,
    parse_amd,
    parse_amd_smi,
    parse_ixsmi,
    parse_npu_smi,
    parse_nvidia_smi,
    parse_rocm_smi,
)
from inventory.fleet import load_fleet
from inventory.probe import HostReport, _accelerators, compare

from .conftest import ROOT, run_cli
from .fleets import gpus, host

DATA = ROOT / "tests" / "data" / "probe"


def test_nvidia_smi_csv():
    found = parse_nvidia_smi((DATA / "nvidia-smi.h100x8.csv").read_text())
    assert [(f.index, f.model, f.vram_mib) for f in found][:2] == [(0, "NVIDIA H100 80GB HBM3", 81559),
                                                                  (1, "NVIDIA H100 80GB HBM3", 81559)]
    assert found[0].uuid == "GPU-5a9e6c1f-0b4e-4c1d-9f0a-2d7c1a3e5b10" and found[1].pci_bus_id == "0000:2a:00.0"
    assert found[0].driver == "550.54.15"
    with pytest.raises(ToolOutputError, match="expected 6 columns"):
        parse_nvidia_smi("0, GPU-x, H100\n")


def test_rocm_smi_json():
    found = parse_rocm_smi((DATA / "rocm-smi.json").read_text())
    assert [(f.index, f.vram_mib) for f in found] == [(0, 16368), (1, 64)]
    assert found[0].model.startswith("Navi 21") and found[0].uuid == "0x9246____________" and found[1].uuid is None
    with pytest.raises(ToolOutputError, match="VRAM Total Memory"):
        parse_rocm_smi('{"card0": {"Card Series": "x"}}')


MI300A_UUIDS = ["7eff74a0-0000-1000-808f-7e20764e2714", "b6ff74a0-0000-1000-80ae-7c8cefe1f084",
                "36ff74a0-0000-1000-8071-25d815189854", "f4ff74a0-0000-1000-80c4-4c2be5e66537"]


def test_amd_smi_static_and_list_json():
    static = (DATA / "amd-smi-static.mi300a.json").read_text()
    found = parse_amd_smi(static + (DATA / "amd-smi-list.mi300a.json").read_text())
    assert [(f.index, f.model, f.vram_mib, f.pci_bus_id, f.uuid) for f in found] == [
        (i, "MI300A", 64289, f"000{i}:01:00.0", MI300A_UUIDS[i]) for i in range(4)]
    assert {f.driver for f in found} == {"6.9.0-rc5+"}
    # ROCm 6.4's amd-smi wraps the same list; without `amd-smi list` there are no UUIDs, the rest is the same
    wrapped = parse_amd('{"gpu_data": ' + static + "}")
    assert [(f.index, f.vram_mib, f.uuid) for f in wrapped] == [(i, 64289, None) for i in range(4)]
    # the probe's AMD section holds whichever tool the host has: rocm-smi's JSON is still read
    assert [f.vram_mib for f in parse_amd((DATA / "rocm-smi.json").read_text())] == [16368, 64]


@pytest.mark.parametrize("text, message", [
    ('[{"gpu": 0, "vram": {"type": "HBM", "size": "N/A"}}]', "gpu 0: VRAM size 'N/A' is not a size in MB"),
    ('[{"gpu": 0, "asic": {}}]', "gpu 0: no 'vram' section"),
    ('[{"asic": {}}]', "without a numeric 'gpu' id"),
    ('[{"gpu": 1, "vram": {"size": {"value": 16, "unit": "TB"}}}]', "is not a size in MB"),
    ('{"card0": 1}', "expected a list of GPUs"),
    ("[{\"gpu\": 0,", "not JSON"),
    ("", "printed nothing"),
])
def test_amd_smi_output_it_cannot_read_is_named(text, message):
    with pytest.raises(ToolOutputError, match=re.escape(message)):
        parse_amd_smi(text)


def test_hygon_is_read_from_the_amd_section_once():
    """rocm-smi shows AMD and Hygon cards: the AMD section's one run serves both vendors."""
    report = HostReport("h", "x")
    _accelerators("@@gpufleet:rc=127", report, "amd", {"hygon"})
    assert report.problems == ["the inventory lists hygon devices but neither amd-smi nor rocm-smi is installed"]
    report = HostReport("h", "x")
    _accelerators((DATA / "rocm-smi.hygon.json").read_text() + "\n@@gpufleet:rc=0@rocm-smi", report, "amd", {"hygon"})
    assert [(a["vendor"], a["vram_mib"]) for a in report.accelerators] == [("hygon", 65520)] and not report.problems


def test_json_nested_beyond_any_tool_is_refused_not_a_traceback():
    deep = "[" * 200_000 + "]" * 200_000
    with pytest.raises(ToolOutputError, match="amd-smi --json is not JSON"):
        parse_amd_smi(deep)
    with pytest.raises(ToolOutputError, match="rocm-smi --json is not JSON"):
        parse_rocm_smi('{"a":' + deep + "}")


def test_a_missing_or_failing_amd_tool_is_named():
    report = HostReport("h", "x")
    _accelerators("@@gpufleet:rc=127", report, "amd", {"amd"})
    _accelerators("@@gpufleet:rc=1@amd-smi\nERROR:root:Unable to detect any GPU devices, check amdgpu version",
                  report, "amd", {"amd"})
    _accelerators("@@gpufleet:rc=127", report, "nvidia", set())  # not listed, not installed: fine
    assert report.problems == [
        "the inventory lists amd devices but neither amd-smi nor rocm-smi is installed",
        "amd-smi failed: ERROR:root:Unable to detect any GPU devices, check amdgpu version"]


def test_rocm_smi_json_of_an_amd_and_a_hygon_card_as_gpustack_recorded_them():
    (amd,) = parse_rocm_smi((DATA / "rocm-smi.rx7800xt.json").read_text())
    assert (amd.vendor, amd.index, amd.model, amd.vram_mib, amd.uuid) == (
        "amd", 0, "Navi 32 [Radeon RX 7700 XT / 7800 XT]", 16368, "0x5c88007d760374f3")
    (dcu,) = parse_rocm_smi((DATA / "rocm-smi.hygon.json").read_text())
    assert (dcu.vendor, dcu.index, dcu.model, dcu.vram_mib, dcu.uuid) == (
        "hygon", 0, "DCU xxxx", 65520, "7100fa8866904061")
    with pytest.raises(ToolOutputError, match="Hygon.*vram Total Memory"):
        parse_rocm_smi('{"card0": {"DCU use (%)": "0"}}')


def test_ixsmi_csv_as_gpustack_documents_it():
    found = parse_ixsmi((DATA / "ixsmi.csv").read_text())
    assert [(f.vendor, f.index, f.model, f.vram_mib) for f in found] == [
        ("iluvatar", 0, "Iluvatar MR-V50", 16384), ("iluvatar", 1, "Iluvatar MR-V100", 32768)]
    with pytest.raises(ToolOutputError, match="ixsmi line 1: index and memory.total"):
        parse_ixsmi("0, Iluvatar MR-V50, 16 GiB, 1 MiB, 0 %, 30 C\n")


def test_npu_smi_info_table():
    found = parse_npu_smi((DATA / "npu-smi.910b.txt").read_text())
    assert [(f.index, f.model, f.vram_mib, f.pci_bus_id) for f in found] == [
        (0, "Ascend910", 65536, "0000:9d:00.0"), (1, "Ascend910", 65536, "0000:9f:00.0"),
        (2, "Ascend910", 65536, "0000:99:00.0"), (3, "Ascend910", 65536, "0000:9b:00.0")]


def test_compare_names_every_difference():
    h = host("h", gpus("nvidia", "H100", 80, 8, uuids=True))
    report = HostReport("h", "x", docker="28.2.2", runtimes=["runc"],
                        accelerators=[{"vendor": "nvidia", "index": i, "model": "H100", "vram_mib": 81920 if i else 40960,
                                       "uuid": "GPU-H100-0" if i else "GPU-other", "pci_bus_id": None, "driver": None}
                                      for i in range(7)])
    compare(h, report)
    text = "\n".join(report.problems)
    assert report.status == "mismatch"
    assert "nvidia: the inventory lists 8 (8 × H100 (80 GiB, nvidia)), the host reports 7" in text
    assert "nvidia device 0: 40 GiB reported, the inventory says 80 GiB" in text
    assert "nvidia device 0: UUID GPU-other reported" in text
    assert "Docker has no nvidia runtime" in text


# ----------------------------------------------------------------------------- on real test hosts

@pytest.fixture(scope="module")
def hosts(fleet_host):  # fleet_host: the session's host; it also makes CI fail if the tools are missing
    from .fleet_host import FleetHostProcess

    procs = [FleetHostProcess() for _ in range(4)]
    started = [
        procs[0].start({"nvidia-smi": (DATA / "nvidia-smi.h100x8.csv").read_text()}, runtimes=("nvidia",)),
        procs[1].start({"rocm-smi": (DATA / "rocm-smi.json").read_text()}),
        procs[2].start(),
        # amd-smi and rocm-smi both installed (as ROCm 6 ships them): the AMD devices are amd-smi's (this
        # rocm-smi shows one other card: reading it would be a mismatch)
        procs[3].start({"amd-smi static": (DATA / "amd-smi-static.mi300a.json").read_text(),
                        "amd-smi list": (DATA / "amd-smi-list.mi300a.json").read_text(),
                        "rocm-smi": (DATA / "rocm-smi.rx7800xt.json").read_text()}),
    ]
    yield procs, started
    for p in procs:
        p.stop()


def _entry(name: str, h, accelerators: str = "", known_hosts: Path | None = None) -> str:
    """One inventory host for a test host; ``accelerators``: its indented YAML lines, if any."""
    return (f"  - name: {name}\n    address: {h.address}\n    ssh: {{user: root, identity_file: {h.identity}, "
            f"known_hosts: {known_hosts or h.known_hosts}}}\n{accelerators}")


def _inventory(tmp_path: Path, started, known_hosts: Path | None = None) -> Path:
    nv, amd, cpu, mi = started
    entry = lambda name, h, acc: _entry(name, h, acc, known_hosts)  # noqa: E731
    text = "hosts:\n" + entry("nv-1", nv, "    accelerators:\n      - vendor: nvidia\n        model: NVIDIA H100 "
                                          "80GB HBM3\n        vram: 81559MiB\n        devices:\n" + "".join(
        f"          - {{index: {i}, uuid: {u}}}\n" for i, u in enumerate(
            ["GPU-5a9e6c1f-0b4e-4c1d-9f0a-2d7c1a3e5b10", "GPU-8c2f4d7a-3e1b-4a6c-8d2e-6f9b0c4a7d21",
             "GPU-1d7b3e9c-5a2f-4e8d-b1c6-3a0f7e2d9c32", "GPU-e4a1c8f2-7d3b-4f9e-a2c5-8b1d6e0f3a43"])))
    text += entry("amd-1", amd, "    accelerators: [{vendor: amd, model: Radeon, vram: 16GiB, count: 8}]\n")
    text += entry("cpu-1", cpu, "")
    text += entry("mi-1", mi, "    accelerators:\n      - {vendor: amd, model: MI300A, vram: 64289MiB, devices: ["
                  + ", ".join(f"{{index: {i}, uuid: {u}}}" for i, u in enumerate(MI300A_UUIDS)) + "]}\n")
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    return path


def test_probe_reports_ok_mismatch_and_facts(hosts, tmp_path):
    _, started = hosts
    inv = _inventory(tmp_path, started)
    before = inv.read_bytes()
    r = run_cli("probe", "--inventory", inv, "--json")
    assert r.code == 5, r.err
    report = {h["host"]: h for h in json.loads(r.out)["hosts"]}
    assert report["nv-1"]["status"] == "ok", report["nv-1"]["problems"]
    assert len(report["nv-1"]["accelerators"]) == 4 and "nvidia" in report["nv-1"]["runtimes"]
    assert report["nv-1"]["cpus"] >= 1 and report["nv-1"]["ram_mib"] > 0 and report["nv-1"]["docker"]
    assert report["amd-1"]["status"] == "mismatch"
    assert "amd: the inventory lists 8 (8 × Radeon (16 GiB, amd)), the host reports 2" in report["amd-1"]["problems"]
    assert report["cpu-1"]["status"] == "ok"
    assert report["mi-1"]["status"] == "ok", report["mi-1"]["problems"]
    assert [(a["index"], a["uuid"], a["pci_bus_id"]) for a in report["mi-1"]["accelerators"]] == [
        (i, u, f"000{i}:01:00.0") for i, u in enumerate(MI300A_UUIDS)]
    assert inv.read_bytes() == before  # probe writes nothing
    table = run_cli("probe", "--inventory", inv)
    assert "nv-1" in table.out and "1 mismatch" in table.out


def test_a_changed_host_key_is_refused(hosts, tmp_path):
    _, started = hosts
    wrong = tmp_path / "known_hosts"
    wrong.write_text("".join(f"{h.address} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
                             for h in started))
    r = run_cli("probe", "--inventory", _inventory(tmp_path, started, wrong), "--json")
    hosts_ = json.loads(r.out)["hosts"]
    assert r.code == 5 and all(h["status"] == "unreachable" for h in hosts_)
    assert all("CHANGED" in h["problems"][0] for h in hosts_)


def test_dead_sshd_and_dead_dockerd_are_reported_and_nothing_hangs(hosts, tmp_path):
    procs, started = hosts
    inv = _inventory(tmp_path, started)
    procs[2].kill_sshd()
    procs[1].kill_dockerd()
    r = subprocess.run([sys.executable, "-m", "cli.main", "probe", "--inventory", str(inv), "--json", "--timeout", "5"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)  # a hang fails the test
    report = {h["host"]: h for h in json.loads(r.stdout)["hosts"]}
    assert r.returncode == 5
    assert report["cpu-1"]["status"] == "unreachable" and "cannot reach" in report["cpu-1"]["problems"][0]
    assert any("Docker does not answer" in p for p in report["amd-1"]["problems"])
    assert report["nv-1"]["status"] == "ok"  # the healthy host is reported correctly


def test_probe_reads_the_inventory_it_is_given(tmp_path):
    r = run_cli("probe", "--inventory", tmp_path / "missing.yaml")
    assert r.code == 2 and "file not found" in r.err
    assert load_fleet(ROOT / "inventory" / "demo.yaml").hosts


def _discover(host, tmp_path):
    """``gpufleet discover`` of one test host, recording its key: the result, the known_hosts file and an
    inventory of what it printed."""
    known = tmp_path / "known_hosts"
    r = run_cli("discover", host.address, "--identity", host.identity, "--known-hosts", known)
    assert r.code == 0, r.err
    inv = tmp_path / "inv.yaml"
    inv.write_text("hosts:\n" + r.out)
    return r, known, inv


def test_discover_records_keys_and_prints_entries_that_probe_ok(hosts, tmp_path):
    _, started = hosts
    nv = started[0]
    r, known, inv = _discover(nv, tmp_path)
    assert f"recorded {nv.address} in {known}: SHA256:" in r.err
    assert known.read_text().startswith(f"{nv.address} ssh-ed25519 ")
    assert "        vram: 81559MiB" in r.out and "uuid: GPU-5a9e6c1f-0b4e-4c1d-9f0a-2d7c1a3e5b10" in r.out
    fleet = load_fleet(inv)
    (h,) = fleet.hosts
    assert len(h.groups[0].devices) == 4 and h.cpus and h.ram_mib
    assert run_cli("probe", "--inventory", inv).code == 0  # what discover wrote matches the host
    again = run_cli("discover", nv.address, "--identity", nv.identity, "--known-hosts", known)
    assert again.code == 0 and "recorded" not in again.err and known.read_text().count("\n") == 1


def test_discover_refuses_a_changed_key(hosts, tmp_path):
    _, started = hosts
    known = tmp_path / "known_hosts"
    known.write_text(f"{started[0].address} ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    r = run_cli("discover", started[0].address, "--identity", started[0].identity, "--known-hosts", known)
    assert r.code == 5 and "CHANGED" in r.err and r.out == ""


def test_discover_reads_amd_smi_and_a_replaced_gpu_is_a_mismatch(hosts, tmp_path):
    _, started = hosts
    r, _, inv = _discover(started[3], tmp_path)
    assert "vendor: amd" in r.out and "vram: 64289MiB" in r.out and f"uuid: {MI300A_UUIDS[3]}" in r.out
    assert run_cli("probe", "--inventory", inv).code == 0
    inv.write_text("hosts:\n" + r.out.replace(MI300A_UUIDS[2], "00ff74a0-0000-1000-8000-000000000000"))
    out = run_cli("probe", "--inventory", inv, "--json")
    (h,) = json.loads(out.out)["hosts"]
    assert out.code == 5 and h["problems"] == [
        f"amd device 2: UUID {MI300A_UUIDS[2]} reported, the inventory says 00ff74a0-0000-1000-8000-000000000000 "
        "(a replaced GPU?)"]


def test_a_wedged_tool_that_hangs_or_floods_is_named_and_the_others_are_probed(fleet_host, tmp_path):
    """nvidia-smi on a host whose GPU fell off the bus hangs; a broken one may print without end. Each
    host is reported within the probe's bound, naming the tool, and the healthy host is still ok."""
    from .fleet_host import FleetHostProcess

    procs = [FleetHostProcess() for _ in range(3)]
    try:
        csv = (DATA / "nvidia-smi.h100x8.csv").read_text()
        started = [p.start({"nvidia-smi": csv}, runtimes=("nvidia",)) for p in procs]
        for h, body in ((started[1], "exec sleep 30"), (started[2], "exec yes 'GPU 0: wedged'")):
            (h.folder / "bin" / "nvidia-smi").write_text(f"#!/bin/sh\n{body}\n")
        gpu = ("    accelerators: [{vendor: nvidia, model: NVIDIA H100 80GB HBM3, vram: 81559MiB, count: 4}]\n")
        inv = tmp_path / "inv.yaml"
        inv.write_text("hosts:\n" + "".join(_entry(name, h, gpu) for name, h in zip(("ok-1", "hangs-1", "floods-1"),
                                                                                    started)))
        r = subprocess.run([sys.executable, "-m", "cli.main", "probe", "--inventory", str(inv), "--json",
                            "--timeout", "2"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        report = {h["host"]: h for h in json.loads(r.stdout)["hosts"]}
        assert r.returncode == 5
        assert report["ok-1"]["status"] == "ok", report["ok-1"]["problems"]
        assert report["hangs-1"]["status"] == "unreachable"
        assert report["hangs-1"]["problems"] == [
            "the probe's commands did not finish within 6 s; stopped (in nvidia-smi: a wedged tool? run it on "
            "the host)"]
        assert report["floods-1"]["problems"] == [
            "the probe's commands printed more than 16 MiB; stopped (in nvidia-smi: a wedged tool? run it on "
            "the host)"]
        assert report["hangs-1"]["seconds"] < 15 and report["floods-1"]["seconds"] < 15
    finally:
        for p in procs:
            p.stop()


@pytest.mark.parametrize("printed", ["not json", "[" * 100_000, '[{"State": {}}]', '[1, 2]', '{"Name": "x"}',
                                     '[{"Name": 7}]'])
def test_docker_inspect_output_that_is_not_its_json_is_a_host_problem(monkeypatch, printed):
    """status reads `docker inspect` from every host: garbage there is that host's problem (an OSError the
    command reports as 'Docker does not answer'), never a traceback that stops the whole check."""
    from inventory import host_state

    answers = iter([(0, "abc123\n", ""), (0, printed, "")])
    monkeypatch.setattr(host_state, "run", lambda *a, **k: next(answers))
    with pytest.raises(OSError, match="docker inspect printed something that is not its JSON"):
        host_state.containers(object(), "demo")


def test_hygon_iluvatar_and_a_vendor_without_a_parser_on_real_hosts(fleet_host, tmp_path):
    """A Hygon host (its rocm-smi's own keys, in MiB) and an Iluvatar host probe ok; a host listing Cambricon
    devices, which nothing reads yet, is ok with a note (it made the probe stop with a KeyError before)."""
    from .fleet_host import FleetHostProcess

    procs = [FleetHostProcess() for _ in range(3)]
    try:
        started = [procs[0].start({"rocm-smi": (DATA / "rocm-smi.hygon.json").read_text()}),
                   procs[1].start({"ixsmi": (DATA / "ixsmi.csv").read_text()}), procs[2].start()]
        kinds = {
            "dcu-1": "[{vendor: hygon, model: DCU xxxx, vram: 65520MiB, devices: [{index: 0, uuid: 7100fa8866904061}]}]",
            "ix-1": "[{vendor: iluvatar, model: Iluvatar MR-V50, vram: 16GiB, indices: [0]}, "
                    "{vendor: iluvatar, model: Iluvatar MR-V100, vram: 32GiB, indices: [1]}]",
            "mlu-1": "[{vendor: cambricon, model: MLU370, vram: 48GiB, count: 8}]"}
        inv = tmp_path / "inv.yaml"
        inv.write_text("hosts:\n" + "".join(_entry(name, h, f"    accelerators: {acc}\n")
                                             for (name, acc), h in zip(kinds.items(), started)))
        r = run_cli("probe", "--inventory", inv, "--json")
        report = {h["host"]: h for h in json.loads(r.out)["hosts"]}
        assert r.code == 0, {k: v["problems"] for k, v in report.items()}
        assert [(a["vendor"], a["vram_mib"]) for a in report["dcu-1"]["accelerators"]] == [("hygon", 65520)]
        assert [a["model"] for a in report["ix-1"]["accelerators"]] == ["Iluvatar MR-V50", "Iluvatar MR-V100"]
        assert report["mlu-1"]["status"] == "ok" and report["mlu-1"]["notes"] == [
            "cambricon: gpufleet cannot read this vendor's tool yet; the inventory's cambricon devices are taken "
            "as written"]
        table = run_cli("probe", "--inventory", inv)
        assert "  note: cambricon: gpufleet cannot read" in table.out and "3 ok" in table.out
    finally:
        for p in procs:
            p.stop()


def test_rocm_smi_memory_in_use_as_gpustack_recorded_it():
    from inventory.accelerator_tools import parse_rocm_smi_used

    # GPUStack's own test expects these two figures from the same files: 11,077 MiB and 2 MiB in use
    assert parse_rocm_smi_used((DATA / "rocm-smi.rx7800xt.json").read_text()) == {0: 11077}
    assert parse_rocm_smi_used((DATA / "rocm-smi.hygon.json").read_text()) == {0: 2}
    with pytest.raises(ToolOutputError):
        parse_rocm_smi_used("[" * 100_000)


def test_status_reads_gpu_memory_in_use_from_rocm_smi_where_there_is_no_nvidia_smi(fleet_host):
    """`gpufleet status` shows each GPU's memory in use beside the plan's claim: on an AMD (or Hygon) host it comes
    from rocm-smi, over the same SSH session (real sshd, fake rocm-smi printing the recorded card)."""
    from inventory.host_state import gpu_memory_used
    from inventory.ssh import Endpoint, connect

    from .fleet_host import FleetHostProcess

    proc = FleetHostProcess()
    try:
        h = proc.start({"rocm-smi": (DATA / "rocm-smi.rx7800xt.json").read_text()})
        client = connect(Endpoint("amd-1", h.address, 22, "root", str(h.known_hosts), str(h.identity)))
        try:
            assert gpu_memory_used(client) == {0: 11077}
            (h.folder / "bin" / "rocm-smi").unlink()
            assert gpu_memory_used(client) is None  # neither tool: nothing to show, not an error
        finally:
            client.close()
    finally:
        proc.stop()


def test_sessions_send_and_acknowledge_at_once(fleet_host):
    """OpenSSH sends a non-terminal session's messages with Nagle's algorithm on, so with Linux's delayed
    acknowledgements every session opened and every exit waited 40 ms or more: the connection gpufleet
    opens sends at once and acknowledges at once, and commands still run over it."""
    import socket

    from inventory.ssh import Endpoint, _Socket, connect, run

    client = connect(Endpoint("t", fleet_host.address, 22, "root", str(fleet_host.known_hosts),
                              str(fleet_host.identity)))
    try:
        assert run(client, ["echo", "hello"]) == (0, "hello\n", "")
        sock = client.get_transport().sock
        assert isinstance(sock, _Socket)  # acknowledges at once (below)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert run(client, ["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")
    finally:
        client.close()


def test_the_ssh_socket_acknowledges_at_once_after_every_read():
    """A conversation like SSH's (this side asks, the server answers): after the first answer Linux
    switches the connection to delayed acknowledgements (the kernel's own state, read back with no other
    traffic in flight; a plain socket reads 1, 0, 0, ...). The socket sets quick acknowledgements again
    around each read."""
    import socket

    from inventory.ssh import open_socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        sock = open_socket("127.0.0.1", server.getsockname()[1], 5)
        peer, _ = server.accept()
        with peer:
            modes = []
            for _ in range(6):
                sock.sendall(b"ask")
                assert peer.recv(16) == b"ask"
                peer.sendall(b"answer")
                assert sock.recv(16) == b"answer"
                modes.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))
        sock.close()
    assert modes == [1] * 6
