"""CPUs and memory are placement resources; constrained replicas are never starved by flexible ones."""
from __future__ import annotations

import gc
import json
from dataclasses import replace

from stack.lock import render_lock
from stack.placement import Demand, place

from .fleets import cpu_only, fleet, gpus, host
from .test_placement import read_lock_from_text


def whole(dep: str, replica: int, framework: str = "cuda", n: int = 1, **kw) -> Demand:
    return Demand(dep, replica, framework, n, None, **kw)


def test_a_flexible_deployment_never_takes_what_a_constrained_one_needs():
    """The issue's smallest case: 'any' sorts before 'mi3' and, avoiding its own host, took a
    device of 'big' that only 'mi3' could use; most-constrained-first places all four."""
    f = fleet(host("big", gpus("amd", "AMD Instinct MI300X", 192, 2)),
              host("small", gpus("amd", "Radeon RX 7900 XTX", 24, 2)))
    demands = [whole("any", r, "rocm") for r in range(2)] + \
              [whole("mi3", r, "rocm", gpu_model="*Instinct MI3*") for r in range(2)]
    for strategy in ("binpack", "spread"):
        p = place(f, demands, strategy=strategy)
        assert not p.unplaced, [u.message for u in p.unplaced]
        assert {a.host for a in p.assignments if a.deployment == "mi3"} == {"big"}
        assert {a.host for a in p.assignments if a.deployment == "any"} == {"small"}


def test_cpu_only_replicas_spread_over_hosts_by_their_cpus_and_memory():
    """Without capacity, binpack piled every CPU-only replica on one host (only ports stopped it)."""
    f = fleet(*(cpu_only(f"cpu-{i}", cpus=32, ram_gib=128, reserved=(2, 8)) for i in range(4)))
    demands = [Demand("emb", r, "cpu", 0, cpus=8, ram_mib=16 * 1024) for r in range(12)]
    p = place(f, demands)
    assert not p.unplaced
    per_host = {}
    for a in p.assignments:
        per_host[a.host] = per_host.get(a.host, 0) + 1
    assert max(per_host.values()) == 3  # (32 - 2) // 8 CPUs
    assert sum(per_host.values()) == 12


def test_gpu_replicas_skip_hosts_whose_cpus_or_memory_ran_out():
    f = fleet(host("a", gpus("nvidia", "H100", 80, 8), cpus=16, ram_gib=256),
              host("b", gpus("nvidia", "H100", 80, 8), cpus=24, ram_gib=256))
    # the GPUs alone would fit on one host; CPUs allow two replicas on 'a' and three on 'b'
    demands = [whole("vllm", r, cpus=8, ram_mib=32 * 1024) for r in range(5)]
    p = place(f, demands)
    assert not p.unplaced
    assert sorted(a.host for a in p.assignments) == ["a", "a", "b", "b", "b"]


def test_unplaced_for_want_of_cpus_or_memory_says_so():
    f = fleet(*(host(f"g{i}", gpus("nvidia", "L4", 24, 4), cpus=16, ram_gib=64) for i in range(3)),
              cpu_only("c0", cpus=8, ram_gib=512))
    p = place(f, [whole("big-cpu", 0, cpus=24)])
    (u,) = p.unplaced
    assert "cpu: 3 hosts lack 24 free CPUs" in u.message, u.message
    assert u.rejected["free_cpu"] == 3
    p = place(f, [Demand("ram-hungry", 0, "cpu", 0, ram_mib=600 * 1024)])
    (u,) = p.unplaced
    assert "memory: 4 hosts lack 600 GiB of free memory" in u.message, u.message


def test_hosts_that_do_not_declare_capacity_are_not_limited():
    f = fleet(cpu_only("legacy"))
    p = place(f, [Demand("x", r, "cpu", 0, cpus=64, ram_mib=1 << 20) for r in range(3)])
    assert not p.unplaced and {a.host for a in p.assignments} == {"legacy"}


def test_departing_replicas_keep_their_cpus_until_they_are_gone():
    f = fleet(cpu_only("c0", cpus=16, ram_gib=64), cpu_only("c1", cpus=16, ram_gib=64))
    first = place(f, [Demand("old", 0, "cpu", 0, cpus=12)])
    prior = read_lock_from_text(render_lock("s", first))
    # 'old' is removed; its container still runs while 'new' starts: 'new' must not count its CPUs as free
    second = place(f, [Demand("new", 0, "cpu", 0, cpus=12)], prior)
    (a,) = second.assignments
    assert a.host != first.assignments[0].host


def test_a_smaller_claim_that_still_fits_keeps_the_replica_where_it_is():
    f = fleet(host("a", gpus("nvidia", "A100", 80, 2)), host("b", gpus("nvidia", "A100", 80, 2)))
    shared = Demand("llm", 0, "cuda", 1, 40 * 1024, 40 * 1024, cpus=4)
    first = place(f, [shared])
    prior = read_lock_from_text(render_lock("s", first))
    smaller = replace(shared, vram_mib=30 * 1024, min_vram_mib=30 * 1024, cpus=2)
    (a,) = place(f, [smaller], prior).assignments
    b = first.assignments[0]
    assert (a.status, a.host, a.gpus, a.port) == ("kept", b.host, b.gpus, b.port)
    assert a.claim.vram_mib == 30 * 1024 and a.claim.cpus == 2  # the lock records the new claim
    # a claim the device cannot hold moves, and says why
    bigger = replace(shared, vram_mib=90 * 1024, min_vram_mib=90 * 1024)
    p = place(f, [bigger], prior)
    assert p.unplaced and p.moved_reasons["llm/0"] == "demand_changed"
    # a different number of GPUs is a different shape: placed afresh
    two = replace(shared, gpus=2)
    (moved,) = place(f, [two], prior).assignments
    assert moved.status == "moved" and moved.reason == "demand_changed"


def test_the_lock_records_cpus_and_memory_and_reads_them_back():
    f = fleet(cpu_only("c0", cpus=16, ram_gib=64))
    p = place(f, [Demand("x", 0, "cpu", 0, cpus=2.5, ram_mib=4096)])
    text = render_lock("s", p)
    assert '"cpus": 2.5' in text and '"ram_mib": 4096' in text
    prior = read_lock_from_text(text)
    assert prior["x/0"].claim.cpus == 2.5 and prior["x/0"].claim.ram_mib == 4096


def test_the_inventory_declares_capacity_and_what_the_system_keeps(tmp_path):
    from documents.problems import InputError
    from inventory.fleet import load_fleet

    f = tmp_path / "fleet.yaml"
    f.write_text("defaults: {reserved: {cpus: 2, ram: 16GiB}}\nhosts:\n"
                 "  - {name: a, address: 127.0.0.1, cpus: 64, ram: 256GiB}\n"
                 "  - {name: b, address: 127.0.0.2, cpus: 8, ram: 32GiB, reserved: {cpus: 0.5}}\n"
                 "  - {name: c, address: 127.0.0.3}\n")
    fl = load_fleet(f, "fleet.yaml")
    assert (fl.host("a").allocatable_cpus, fl.host("a").allocatable_ram_mib) == (62, 240 * 1024)
    assert (fl.host("b").allocatable_cpus, fl.host("b").allocatable_ram_mib) == (7.5, 32 * 1024)
    assert (fl.host("c").allocatable_cpus, fl.host("c").allocatable_ram_mib) == (None, None)
    f.write_text("hosts:\n  - name: a\n    address: 127.0.0.1\n    cpus: 4\n    reserved: {cpus: 4}\n")
    try:
        load_fleet(f, "fleet.yaml")
    except InputError as err:
        text = str(err.problems[0])
    else:
        raise AssertionError("reserving every CPU was accepted")
    assert text == ("fleet.yaml:5:15: hosts[0].reserved: host 'a' reserves 4 of its 4 cpus for the system, leaving "
                    "nothing for replicas; lower reserved or correct the host's capacity"), text


def test_hosts_with_the_same_cards_share_their_groups_and_fill_independently(tmp_path):
    from inventory.fleet import load_fleet

    f = tmp_path / "fleet.yaml"
    f.write_text("hosts:\n" + "".join(
        f"  - {{name: h{i}, address: 127.0.0.{i + 1}, accelerators: [{{vendor: nvidia, model: A100, vram: 80GiB, "
        "count: 2}, {vendor: amd, model: MI300X, vram: 192GiB, count: 1}]}\n" for i in range(3)))
    fl = load_fleet(f, "fleet.yaml")
    assert fl.host("h0").groups[0] is fl.host("h2").groups[0]  # one immutable group for every such host
    assert [d.index for d in fl.host("h1").groups[0].devices] == [0, 1]
    assert [d.index for d in fl.host("h1").groups[1].devices] == [0]  # each vendor numbers from 0
    p = place(fl, [whole("a", r) for r in range(6)] + [whole("b", r, "rocm") for r in range(3)])
    assert not p.unplaced
    by_host = sorted((a.host, a.vendor, a.gpus) for a in p.assignments)
    assert by_host == sorted([(f"h{i}", "nvidia", (g,)) for i in range(3) for g in (0, 1)]
                             + [(f"h{i}", "amd", (0,)) for i in range(3)])


def test_the_first_reason_given_is_the_real_one():
    from .fleets import nvidia_a100x4, nvidia_h100x8

    f = fleet(nvidia_h100x8(), nvidia_a100x4())
    # every device is smaller than 300 GiB: that is said, not the device count
    (u,) = place(f, [Demand("huge", 0, "cuda", 1, 300 * 1024, 300 * 1024)]).unplaced
    assert u.never_fits and u.rejected == {"vram_size": 2}
    assert ("no single host can ever hold 1 × 300 GiB cuda: every cuda device is smaller than 300 GiB (the largest "
            "has 80 GiB); claim less VRAM per GPU, with more GPUs") in u.message, u.message
    # a bare model name never matches the inventory's full names: the hint says which glob would
    named = fleet(host("n1", gpus("nvidia", "NVIDIA H100 80GB HBM3", 80, 8)),
                  host("n2", gpus("nvidia", "NVIDIA A100-SXM4-40GB", 40, 4)))
    (u,) = place(named, [Demand("h", 0, "cuda", 1, gpu_model="H100")]).unplaced
    assert ("GPU model: 2 hosts have no 'H100' (gpu_model is a glob on the whole model name; '*H100*' would "
            "match NVIDIA H100 80GB HBM3)") in u.message, u.message


def test_an_implausibly_small_vram_is_noted(tmp_path):
    from .conftest import copy_project, run_cli
    from .test_plan_cli import edit

    project = copy_project(tmp_path)
    edit(project / "stack" / "demo.yaml", "resources: {gpus: 1, vram: 24GiB, share: advisory}",
         "resources: {gpus: 1, vram: 24, share: advisory}")
    r = run_cli("--root", project, "validate")
    assert r.code == 0
    assert ("note: stack/demo.yaml:44:32: deployments.gguf-rocm.resources.vram: 24 MiB per GPU is implausibly small "
            "for a model; a bare number is MiB, so write 24GiB if that is what you mean") in r.err, r.err


def test_a_replica_nothing_fit_takes_the_place_of_a_flexible_one_that_can_move():
    """Ordering alone cannot help: 'any' and 'mi3' have two device groups each, 'any' asks more CPUs and
    goes first; binpack puts any/0 on the tightest group (x), soft anti-affinity sends any/1 to w, and
    'mi3' finds x taken and z without the CPUs it needs. The repair step moves any/0 next to any/1 on
    w and gives x to 'mi3': soft anti-affinity never costs a placement."""
    f = fleet(host("x", gpus("amd", "AMD Instinct MI300X", 192, 1), labels={"zone": "a"}, cpus=64, ram_gib=512),
              host("w", gpus("amd", "AMD Instinct MI250X", 128, 2), labels={"zone": "a"}, cpus=64, ram_gib=512),
              host("z", gpus("amd", "AMD Instinct MI300X", 192, 1), labels={"zone": "b"}, cpus=2, ram_gib=512))
    demands = [whole("any", r, "rocm", labels=(("zone", "a"),), cpus=8) for r in range(2)] + \
              [whole("mi3", 0, "rocm", gpu_model="*Instinct MI3*", cpus=4)]
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    assert sorted((a.key, a.host) for a in p.assignments) == [("any/0", "w"), ("any/1", "w"), ("mi3/0", "x")]


def test_a_repair_that_is_undone_leaves_no_memo_behind():
    """'a-roomy' has the VRAM but memory for one 'heavy' replica (32 GiB) beside two 'pair' ones; binpack fills
    'b-snug' with two 'pair' replicas (24 GiB slices on 24 GiB devices) and heavy/1 is left over. The repair
    first tries heavy/1 in pair/2's room on a-roomy: pair/2 then fits nowhere, and the swap is undone. That
    search had noted pair's shape as placeable nowhere, and the memo outlived the undo: the repair then
    skipped the pairs on b-snug as having nowhere to go, though a-roomy takes one once heavy/1 is on
    b-snug. Found by a search of small instances against a MILP of the most replicas placeable."""
    def share(dep, r, n, gib, cpus, ram):
        return Demand(dep, r, "cuda", n, gib * 1024, gib * 1024, cpus=cpus, ram_mib=ram * 1024)

    f = fleet(host("a-roomy", gpus("nvidia", "H100", 48, 8), cpus=32, ram_gib=64),
              host("b-snug", gpus("nvidia", "H100", 24, 4), cpus=32, ram_gib=256))
    demands = [share("pair", r, 2, 24, 8, 8) for r in range(3)] + [share("heavy", r, 1, 16, 4, 32) for r in range(2)]
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    assert sorted(a.host for a in p.assignments if a.deployment == "heavy") == ["a-roomy", "b-snug"]


def test_a_replica_the_repair_moves_may_make_room_for_itself_in_turn(monkeypatch, heuristics_only):
    """Two 40 GiB slices and two whole GPUs, 16 CPUs each, all fit: the slices on the 80 GiB L40S, the whole
    GPUs on the H100 host, whose 32 CPUs hold two. Binpack puts a slice on an H100 (the tighter device) and a
    whole GPU on the L40S, and slice/1 is left over. No single move helps: in the L40S's room, the whole GPU it
    takes back fits nowhere (the H100 host's CPUs are spent); in the H100's, neither does what it takes back.
    The chain does: slice/1 takes the L40S, the whole GPU takes the H100 slice's place, and that slice joins
    slice/1 on the L40S. (Found by a search of small instances against a MILP of the most replicas placeable.)"""
    from stack.placement.engine import _Run

    f = fleet(host("h0", gpus("amd", "AMD Instinct MI300X", 24, 1), cpus=16, ram_gib=256),
              host("h1", gpus("nvidia", "L40S", 80, 1), cpus=64, ram_gib=64),
              host("h2", gpus("nvidia", "H100", 48, 4), cpus=32, ram_gib=64))
    demands = [Demand("slice", r, "cuda", 1, 40 * 1024, 40 * 1024, cpus=16, ram_mib=32 * 1024) for r in range(2)] + \
              [whole("whole", r, cpus=16) for r in range(2)]
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    assert sorted((a.key, a.host) for a in p.assignments) == \
        [("slice/0", "h1"), ("slice/1", "h1"), ("whole/0", "h2"), ("whole/1", "h2")]
    monkeypatch.setattr(_Run, "REPAIR_CHAIN_BUDGET", 0)  # one move at a time: one left over
    assert len(place(f, demands).unplaced) == 1


def test_a_spread_replica_left_over_counts_only_the_hosts_it_may_still_use(heuristics_only):
    """d5 (spread: hosts) has a replica on h1 and on h0; the one left over can only go to h3, where the 2-GPU
    d3 sits. d3 reaches fewer groups than d5 (two hosts have 2 GPUs, three have 1), and the repair never moves
    a replica for one more flexible than it; but hosts running d5 are no places for d5/2, which has one group
    left, so it may. d3 then makes room for itself on h1 by sending d0 to h3's other GPU (a chain of two)."""
    from stack.placement.engine import _Run

    f = fleet(host("h0", gpus("nvidia", "L40S", 80, 1)), host("h1", gpus("nvidia", "H100", 80, 4)),
              host("h3", gpus("nvidia", "L40S", 80, 2)))
    demands = [whole("d0", 0), whole("d2", 0, gpu_model="*H100*"), whole("d3", 0, n=2)] + \
              [whole("d5", r, spread_hosts=True) for r in range(3)]
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    assert sorted(a.host for a in p.assignments if a.deployment == "d5") == ["h0", "h1", "h3"]
    _Run.REPAIR_CHAIN_BUDGET, saved = 0, _Run.REPAIR_CHAIN_BUDGET
    try:
        assert len(place(f, demands).unplaced) == 1
    finally:
        _Run.REPAIR_CHAIN_BUDGET = saved


def test_a_replica_needing_no_gpu_takes_the_place_of_a_more_flexible_one():
    """'router' (spread: hosts, 4 CPUs) has a replica on h1, and h0's 16 CPUs are all taken by a 'batch'
    replica, which could as well run on h1 (no CPU limit). The repair moves batch/0 to h1 and puts
    router/1 on h0."""
    f = fleet(host("h0", gpus("nvidia", "L40S", 80, 1), cpus=16), host("h1", gpus("nvidia", "L40S", 80, 4)))
    demands = [Demand("router", r, "cpu", 0, cpus=4, spread_hosts=True) for r in range(2)] + \
              [Demand("batch", r, "cpu", 0, cpus=16, ram_mib=32 * 1024) for r in range(2)]
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    assert sorted((a.key, a.host) for a in p.assignments) == \
        [("batch/0", "h1"), ("batch/1", "h1"), ("router/0", "h1"), ("router/1", "h0")]


def test_the_repair_moves_a_more_constrained_replica_when_that_is_what_it_takes():
    """Each host has 64 GiB of memory. 'hmem' slices ask 64 GiB, 'pin' slices (`*H100*`) 8 GiB; binpack sends
    one pin to each H100 host and hmem/1 is left over. Only moving pin/1 next to pin/0 helps, and pin, which
    two hosts can hold, is more constrained than hmem, which three can: the repair tries such moves after the
    others, since each is still one replica more."""
    def share(dep, r, gib, ram, **kw):
        return Demand(dep, r, "cuda", 1, gib * 1024, gib * 1024, ram_mib=ram * 1024, **kw)

    f = fleet(host("h0", gpus("nvidia", "H100", 48, 4), ram_gib=64),
              host("h1", gpus("nvidia", "H100", 24, 4), ram_gib=64),
              host("h2", gpus("nvidia", "L40S", 80, 1), ram_gib=64))
    demands = [share("pin", r, 8, 8, gpu_model="*H100*") for r in range(2)] + \
              [share("hmem", r, 16, 64) for r in range(2)]
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    assert len({a.host for a in p.assignments if a.deployment == "pin"}) == 1


def test_a_gpu_replica_left_over_takes_the_place_of_one_needing_no_gpu():
    """'emb' (no GPU, 32 GiB of memory) has a replica on each 80 GiB H100 host and 'slice' (spread: hosts,
    64 GiB) is left over: the 48 GiB host's memory went to 'pin'. Both emb replicas fit on one host; the
    repair moves one and puts the slice in its place."""
    f = fleet(host("h0", gpus("nvidia", "H100", 80, 1), cpus=32, ram_gib=64),
              host("h2", gpus("nvidia", "H100", 48, 1), ram_gib=64),
              host("h4", gpus("nvidia", "H100", 80, 8), cpus=32, ram_gib=64))
    demands = [Demand("emb", r, "cpu", 0, cpus=4, ram_mib=32 * 1024) for r in range(2)] + \
              [whole("pin", 0, cpus=2, ram_mib=64 * 1024, gpu_model="*H100*"),
               Demand("slice", 0, "cuda", 1, 24 * 1024, 24 * 1024, cpus=4, ram_mib=64 * 1024, spread_hosts=True)]
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    on = {a.key: a.host for a in p.assignments}
    assert on["emb/0"] == on["emb/1"] != on["slice/0"]


def test_two_replicas_of_one_host_may_make_room_together(monkeypatch, heuristics_only):
    """'big' (whole H100s asking 64 GiB of memory each) fits only on h1: h2 keeps 8 of its 64 GiB. Binpack
    puts both 'wide' replicas (4 x 16 GiB) on h1 first, sharing its four devices; taking one back frees no
    device, taking both frees all four, and both fit on h2. Where few are left over, the repair tries such
    pairs."""
    from stack.placement.engine import _Run

    f = fleet(host("h1", gpus("nvidia", "H100", 80, 4), cpus=64, ram_gib=256),
              host("h2", gpus("nvidia", "H100", 80, 8), cpus=32, ram_gib=64, reserved=(2, 8)))
    demands = [whole("big", r, cpus=2, ram_mib=64 * 1024) for r in range(3)] + \
              [Demand("wide", r, "cuda", 4, 16 * 1024, 16 * 1024, ram_mib=8 * 1024) for r in range(2)]
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    assert {a.host for a in p.assignments if a.deployment == "big"} == {"h1"}
    monkeypatch.setattr(_Run, "REPAIR_PAIR_BUDGET", 0)
    assert len(place(f, demands).unplaced) == 3


def test_repair_never_moves_a_kept_replica():
    f = fleet(host("x", gpus("amd", "AMD Instinct MI300X", 192, 1), labels={"zone": "a"}, cpus=64, ram_gib=512),
              host("w", gpus("amd", "AMD Instinct MI250X", 128, 2), labels={"zone": "a"}, cpus=64, ram_gib=512),
              host("z", gpus("amd", "AMD Instinct MI300X", 192, 1), labels={"zone": "b"}, cpus=2, ram_gib=512))
    anys = [whole("any", r, "rocm", labels=(("zone", "a"),), cpus=8) for r in range(2)]
    first = place(f, anys)
    assert {a.key: a.host for a in first.assignments} == {"any/0": "x", "any/1": "w"}
    prior = read_lock_from_text(render_lock("s", first))
    p = place(f, anys + [whole("mi3", 0, "rocm", gpu_model="*Instinct MI3*", cpus=4)], prior)
    assert all(a.status == "kept" for a in p.assignments) and [u.key for u in p.unplaced] == ["mi3/0"]


def test_preferences_are_given_up_last_first_and_hard_rules_never():
    from stack.placement.preferences import Context, KeepCpusPerGpu, SoftAntiAffinity, tiers
    from stack.placement.state import FleetState

    f = fleet(host("a", gpus("nvidia", "H100", 80, 8), cpus=64, ram_gib=512))
    state = FleetState(f)
    d = whole("x", 1, cpus=8)
    state.claim(None, [], whole("x", 0, cpus=8), "a")  # x/0 runs on a
    ctx = Context(state, (8.0, 1024.0))
    names = [[p.name for p in tier] for tier in tiers(ctx, d)]
    # 8 CPUs per GPU is not below the average (8): the CPU-rich-hosts preference does not apply
    assert names == [["anti_affinity", "cpu_per_gpu"], ["anti_affinity"], ["cpu_per_gpu"], []]
    assert SoftAntiAffinity().avoided(ctx, d) == {"a"} and KeepCpusPerGpu().applies(ctx, d)
    # spread: hosts is a rule, not a preference: never in a tier to give up
    strict = whole("x", 1, cpus=8, spread_hosts=True)
    assert [[p.name for p in t] for t in tiers(ctx, strict)] == [["cpu_per_gpu"], []]


def test_a_runs_tiers_are_remembered_by_what_they_depend_on_and_anti_affinity_is_asked_each_time():
    """``Tiers`` hands replicas asking the same the same tiers and checks, and asks soft anti-affinity, which reads
    the plan as it stands, again for every search: a deployment running nowhere yet has no such tier."""
    from stack.placement.preferences import Context, Tiers
    from stack.placement.state import FleetState

    f = fleet(host("a", gpus("nvidia", "H100", 80, 8), cpus=64, ram_gib=512))
    state = FleetState(f)
    tiers = Tiers(Context(state, (8.0, 1024.0)))
    names = lambda d: [[p.name for p in t[0]] for t in tiers.of(d, False)]  # noqa: E731
    assert names(whole("x", 0, cpus=8)) == [["cpu_per_gpu"], []]
    assert tiers.of(whole("y", 3, cpus=8), False) is tiers.of(whole("x", 0, cpus=8), False)  # the same asks
    state.claim(None, [], whole("x", 0, cpus=8), "a")  # x/0 runs on a now
    assert names(whole("x", 1, cpus=8)) == [["anti_affinity", "cpu_per_gpu"], ["anti_affinity"], ["cpu_per_gpu"], []]
    assert names(whole("y", 0, cpus=8)) == [["cpu_per_gpu"], []]  # y runs nowhere
    honoured, avoiding, checks, keys = tiers.of(whole("x", 1, cpus=8), False)[0]
    assert [p.name for p in avoiding] == ["anti_affinity"] and len(checks) == len(keys) == 1
    firm = [[p.name for p in t[0]] for t in tiers.of(whole("x", 1, cpus=8), True)]
    assert firm == [["anti_affinity", "cpu_per_gpu"], ["cpu_per_gpu"]]  # the first round never gives up a firm one


def test_cpu_light_replicas_skip_cpu_rich_hosts_while_another_fits():
    """The preference itself (the repair step would also rescue the heavy replica of a small case,
    so the part is checked directly; bench/placement.py --resources shows its effect on allocation)."""
    from stack.placement.preferences import Context, SaveCpuRichHosts
    from stack.placement.state import FleetState

    f = fleet(host("lean", gpus("nvidia", "H100", 80, 4), cpus=26, ram_gib=512),
              host("rich", gpus("nvidia", "H100", 80, 4), cpus=130, ram_gib=512))
    ctx = Context(FleetState(f), (16.0, 1024.0))  # the plan's GPU replicas ask 16 CPUs per GPU
    light, heavy = whole("light", 0, cpus=4), whole("heavy", 0, cpus=32)
    pref = SaveCpuRichHosts()
    assert pref.applies(ctx, light) and not pref.applies(ctx, heavy)
    rich = pref.skips(ctx, light)
    assert rich("rich") and not rich("lean")  # 130/4 CPUs per free GPU is above 16; 26/4 is not


def test_a_deployment_arriving_alone_is_weighed_by_the_plan_not_by_itself():
    """`heavy` (24 CPUs a GPU, pinned to host c by a label) runs and is in the lock; `light` (2 CPUs, 1 GPU)
    arrives alone. Weighed by itself, its 2 CPUs a GPU were the average, so it skipped no CPU-rich host and took
    `a-rich`, first by name; weighed by the plan (heavy's 24 with it), it leaves `a-rich`'s 64 CPUs to the heavy
    replicas to come and takes `b-lean`. 32 GPU replicas or more to place are weighed by themselves (the
    batches' figures on Alibaba's trace), and a plan without a lock is weighed by all it places either way."""
    f = fleet(host("a-rich", gpus("nvidia", "H100", 80, 2), cpus=64, ram_gib=512),
              host("b-lean", gpus("nvidia", "H100", 80, 2), cpus=8, ram_gib=512),
              host("c", gpus("nvidia", "H100", 80, 2), cpus=64, ram_gib=512, labels={"role": "heavy"}))
    heavy = [whole("heavy", r, cpus=24, labels=(("role", "heavy"),)) for r in range(2)]
    first = place(f, heavy)
    assert {a.host for a in first.assignments} == {"c"}
    p = place(f, heavy + [whole("light", 0, cpus=2)], read_lock_from_text(render_lock("s", first)))
    assert [(a.key, a.status) for a in p.assignments if a.deployment == "heavy"] == [("heavy/0", "kept"),
                                                                                    ("heavy/1", "kept")]
    (light,) = [a for a in p.assignments if a.deployment == "light"]
    assert light.host == "b-lean"


def test_a_memory_heavy_replica_spares_hosts_built_lean_in_memory(monkeypatch):
    """`heavy` asks 140 GiB for one GPU: more than three GPUs' worth of `lean` (176 GiB allocatable over 4 GPUs),
    a small share of `rich`'s. It goes to `rich`, although binpack prefers the tighter `lean`, so the next plan
    (with the lock) fits `wide` on `rich` and four 40 GiB replicas on `lean`. Without the preference `heavy`
    takes `lean`'s memory and three of the 40 GiB replicas are left over beside its idle GPUs. (`bare` fills
    `plain`, which declares no memory, and keeps the plan's average memory per GPU low: the stranding check
    alone would have let `heavy` on `lean`.)"""
    from stack.placement.preferences import SpareLeanHostsHeavyMemory

    f = fleet(host("lean", gpus("nvidia", "L40S", 48, 4), cpus=64, ram_gib=192, reserved=(0, 16)),
              host("rich", gpus("nvidia", "L40S", 48, 8), cpus=64, ram_gib=2048, reserved=(0, 16)),
              host("plain", gpus("nvidia", "L40S", 48, 20), labels={"pool": "bare"}))
    first = [whole("heavy", 0, ram_mib=140 * 1024)] + [whole("bare", r, labels=(("pool", "bare"),)) for r in range(20)]
    then = first + [whole("wide", 0, n=7)] + [whole("light", r, ram_mib=40 * 1024) for r in range(4)]

    def two_plans():
        p1 = place(f, first)
        return p1, place(f, then, read_lock_from_text(render_lock("t", p1)))

    p1, p2 = two_plans()
    assert [a.host for a in p1.assignments if a.deployment == "heavy"] == ["rich"]
    assert not p2.unplaced, [u.message for u in p2.unplaced]
    assert [a.host for a in p2.assignments if a.deployment == "light"] == ["lean"] * 4
    monkeypatch.setattr(SpareLeanHostsHeavyMemory, "FACTOR", float("inf"))
    p1, p2 = two_plans()
    assert [a.host for a in p1.assignments if a.deployment == "heavy"] == ["lean"]
    assert sorted(u.key for u in p2.unplaced) == ["light/1", "light/2", "light/3"]


def test_a_memory_heavy_replica_still_takes_a_lean_host_when_nothing_else_fits():
    f = fleet(host("lean", gpus("nvidia", "L40S", 48, 4), cpus=64, ram_gib=192, reserved=(0, 16)))
    p = place(f, [whole("heavy", 0, ram_mib=140 * 1024)])
    assert [a.host for a in p.assignments] == ["lean"]


def test_cpu_only_replicas_take_cpus_no_gpu_will_need():
    """An 8-GPU host and a CPU-rich 2-GPU host; GPU replicas ask 12 CPUs per GPU. The CPU-only replica
    goes where no free GPU needs the CPUs it takes (the 2-GPU host, its GPUs taken), not to the busiest
    host, so the next batch's six GPU replicas all fit on the 8-GPU host (with the replica there, 2 of
    them did not: their CPUs were gone)."""
    f = fleet(host("dense", gpus("nvidia", "G2", 80, 8), cpus=96, ram_gib=1024),
              host("rich", gpus("nvidia", "T4", 16, 2), cpus=104, ram_gib=512))
    first = [whole("a", r, cpus=12) for r in range(4)] + [Demand("c", 0, "cpu", 0, cpus=24)]
    p1 = place(f, first)
    assert not p1.unplaced
    assert {a.host for a in p1.assignments if a.deployment == "a"} == {"dense", "rich"}
    assert [a.host for a in p1.assignments if a.deployment == "c"] == ["rich"]
    then = first + [whole("b", r, cpus=12) for r in range(6)]
    p2 = place(f, then, read_lock_from_text(render_lock("t", p1)))
    assert not p2.unplaced, [u.message for u in p2.unplaced]
    assert [a.host for a in p2.assignments if a.deployment == "b"] == ["dense"] * 6


def test_one_gpu_replicas_go_in_order_of_all_they_ask_not_whole_ones_first():
    """Whole-before-shared placed the four whole replicas first, two of them on the CPU-rich host, and
    left the two quarter-GPU replicas asking 24 CPUs each nowhere to go. Ordered by the sum of what
    they ask (GPU share, CPUs and memory over the fleet's per GPU), the CPU-heavy shared ones go first,
    to the CPU-rich host, and all six are placed."""
    f = fleet(host("dense", gpus("nvidia", "H100", 80, 8), cpus=16, ram_gib=512),
              host("rich", gpus("nvidia", "H100", 80, 2), cpus=64, ram_gib=512),
              host("small", gpus("nvidia", "H100", 80, 2), cpus=16, ram_gib=512))
    gib = 1024
    demands = [whole(name, 0, cpus=c, ram_mib=8 * gib) for name, c in (("w0", 8), ("w1", 16), ("w2", 4), ("w3", 16))]
    demands += [Demand(name, 0, "cuda", 1, 20 * gib, 20 * gib, cpus=24, ram_mib=8 * gib) for name in ("s0", "s1")]
    p = place(f, demands)
    assert not p.unplaced, [u.message for u in p.unplaced]
    assert {a.host for a in p.assignments if a.deployment.startswith("s")} == {"rich"}


def test_gpu_model_may_name_several_globs_any_of_which_matches():
    """Production traces ask for 'V100M16|V100M32' or 'P100|T4|V100*': one glob cannot say that."""
    f = fleet(host("v16", gpus("nvidia", "Tesla V100-SXM2-16GB", 16, 1)),
              host("t4", gpus("nvidia", "Tesla T4", 16, 1)),
              host("a10", gpus("nvidia", "NVIDIA A10", 24, 1)))
    either = ("*V100*", "*T4")
    p = place(f, [Demand("d", r, "cuda", 1, gpu_model=either) for r in range(3)])
    assert {a.host for a in p.assignments} == {"v16", "t4"}
    (u,) = p.unplaced
    assert u.rejected == {"gpu_model": 1, "free_vram": 2}, u.rejected
    assert "GPU model: 1 host has no '*V100*' or '*T4'" in u.message, u.message
    # bare names in a list get the same hint as a single bare name
    (u,) = place(fleet(f.host("v16")), [Demand("h", 0, "cuda", 1, gpu_model=("H100", "V100"))]).unplaced
    assert ("GPU model: 1 host has no 'H100' or 'V100' (gpu_model is a glob on the whole model name; '*V100*' "
            "would match Tesla V100-SXM2-16GB)") in u.message, u.message


def test_a_gpu_model_list_in_a_stack_file(tmp_path):
    from .conftest import copy_project, run_cli
    from .test_plan_cli import edit

    project = copy_project(tmp_path)
    stack = project / "stack" / "demo.yaml"
    edit(stack, "resources: {gpus: 1, vram: 24GiB, share: advisory}\n",
         "resources: {gpus: 1, vram: 24GiB, share: advisory}\n    selectors: {gpu_model: ['*MI250*', '*MI300X*']}\n")
    r = run_cli("--root", project, "plan", "--stack", "demo", "--no-lock", "--json")
    assert r.code == 0, r.err
    (rep,) = [x for x in json.loads(r.out)["replicas"] if x["deployment"] == "gguf-rocm"]
    assert rep["host"] == "amd-mi300x-1"
    edit(stack, "gpu_model: ['*MI250*', '*MI300X*']", "gpu_model: []")
    r = run_cli("--root", project, "validate")
    assert r.code == 2
    assert "stack/demo.yaml:45:28: deployments.gguf-rocm.selectors.gpu_model: " in r.err, r.err
    assert "an empty list matches no GPU; leave gpu_model out to allow any model" in r.err
    # what is neither a glob nor a list of globs is one problem, not one per branch of the union
    before = "gpu_model: []"
    for bad, said in (("['*H100*', 5]", "entry 1 (from 0) must be a glob such as '*H100*', not 5"),
                      ("5", "must be a glob such as '*H100*', or a list of them, not 5")):
        edit(stack, before, f"gpu_model: {bad}")
        before = f"gpu_model: {bad}"
        r = run_cli("--root", project, "validate")
        assert r.code == 2 and r.err.count("selectors.gpu_model") == 1, r.err
        assert f"deployments.gguf-rocm.selectors.gpu_model: {said}" in r.err, r.err


def test_a_plan_leaves_nothing_for_the_cyclic_collector():
    """What a run builds (the state, the index, their sorted lists) is freed by reference counting when the
    plan is returned: no cycle keeps it for a later collection, which had walked 30,000 objects for 17-22 ms
    after each 2,000-host plan. Replicas that ask CPUs are what make a run log host changes (walks.Walks),
    the link that had closed the cycle."""
    f = fleet(*(host(f"h{i}", gpus("nvidia", "H100", 80, 4), cpus=32, ram_gib=256) for i in range(6)))
    demands = [Demand(f"s{i}", r, "cuda", 1, 30 * 1024, 30 * 1024, cpus=2, ram_mib=8 * 1024)
               for i in range(30) for r in range(3)]
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        plan = place(f, demands)
        left = gc.collect()
    finally:
        if was:
            gc.enable()
    assert plan.assignments and plan.unplaced  # a full fleet: every step of the run had work
    assert left == 0


def test_a_host_over_its_cpus_and_memory_still_takes_replicas_that_claim_none(monkeypatch):
    """Another stack's lock holds more CPUs and memory than a host has now (its inventory entry shrank since).
    A replica claiming no CPUs or memory is not limited by them (FleetState.cpu_fits): the search places it there,
    not the explanations' walk after it (which placed it, while searches skipped every host over its CPUs); one
    claiming some is left over, saying the host lacks them."""
    from stack.placement.engine import _Run

    before = fleet(host("h1", gpus("nvidia", "H100", 80, 4), cpus=32, ram_gib=256))
    other = place(before, [whole("other", 0, cpus=24, ram_mib=200 * 1024)])
    held = {"other": tuple(read_lock_from_text(render_lock("other", other)).values())}
    now = fleet(host("h1", gpus("nvidia", "H100", 80, 4), cpus=16, ram_gib=128))
    late: list = []
    place_at = _Run._place_at
    monkeypatch.setattr(_Run, "_place_at", lambda self, d, *a: late.append(d.key) or place_at(self, d, *a))
    p = place(now, [whole("bare", 0), whole("bare", 1, ram_mib=0), whole("asks", 0, cpus=2),
                    whole("asks-memory", 0, ram_mib=1024)], held=held)
    assert sorted(a.key for a in p.assignments) == ["bare/0", "bare/1"] and not late
    assert all(0 not in a.gpus for a in p.assignments)  # the other stack's GPU
    by = {u.key: u.message for u in p.unplaced}
    assert "cpu: 1 host lacks 2 free CPUs" in by["asks/0"]
    assert "memory: 1 host lacks 1 GiB of free memory" in by["asks-memory/0"]


def test_a_replica_moved_off_what_another_stacks_lock_holds_names_that_stack():
    """Both locks were written apart and claim device 0 and port 40000 of h1: this stack's replica moves, and its
    reason says which stack holds its place; a CPU-only one on the other's port likewise."""
    f = fleet(host("h1", gpus("nvidia", "H100", 80, 2)))
    ours = [whole("a", 0), Demand("b", 0, "cpu", 0)]
    other = place(f, [whole("o", 0), Demand("p", 0, "cpu", 0)])
    mine = place(f, ours)
    assert {(a.key, a.gpus, a.port) for a in mine.assignments} == \
        {(a.key.replace("o/", "a/").replace("p/", "b/"), a.gpus, a.port) for a in other.assignments}  # the race
    held = {"other": tuple(read_lock_from_text(render_lock("other", other)).values())}
    p = place(f, ours, read_lock_from_text(render_lock("s", mine)), held=held)
    by = {a.key: a for a in p.assignments}
    assert (by["a/0"].status, by["a/0"].reason, by["a/0"].gpus) == ("moved", "devices_taken:other", (1,))
    assert (by["b/0"].status, by["b/0"].reason) == ("moved", "port_taken:other")
    assert {by["a/0"].port, by["b/0"].port}.isdisjoint({a.port for a in other.assignments})
