"""3. Explanations: why a replica nothing fit was left over, said by the filters themselves.

A replica left over is walked through every filter against the final state, and the hosts each filter turned
away are counted under its reason code (``walk``, ``explain``). Should the walk find a host the search missed,
the replica is placed there instead (``Explanations.explain_unplaced``): an explanation never disagrees with the
decision.
"""
from __future__ import annotations

from math import inf
from operator import itemgetter
from typing import Iterable

from inventory.fleet import Fleet
from inventory.sizes import format_mib

from .exact import RUN_SLACK
from .filters import DEVICE_COUNT, DYNAMIC, FRAMEWORK, GPU_MODEL, MANUAL, SPREAD, VENDOR, VRAM_SIZE, applicable
from .index import CandidateIndex
from .model import Demand, Unplaced
from .state import FleetState, choose_devices


class Explanations:
    """The explanation step of a placement run (mixed into the engine's ``_Run``)."""

    def explain_unplaced(self) -> None:
        """Explain each replica nothing fit, by the filters themselves against the final state: they
        decide. Should they find a host the index-driven search missed, the replica is placed there
        instead of reported (the index, the memos and the preferences only speed the search up), so an
        explanation can never disagree with the decision. Capacity only shrinks during a run, so the
        final state explains every failure, and replicas of one shape share one explanation."""
        cache: dict[tuple, list] = {}  # shape -> [(CPUs, memory, explanation)]
        walks: dict[tuple, list] = {}  # shape -> each host's reach with CPUs and memory left out
        static: dict[tuple, dict] = {}
        too_big: dict[tuple, bool] = {}  # static shape -> no host could ever hold it (the fleet does not change)
        descriptions: dict[tuple, str] = {}
        kinds = [(c.rep.host, c.rep.group) for c in self.index.classes.values()]
        for demand, previous in self._failed:
            key = (demand.static, demand.vram_mib, demand.manual, demand.spread_hosts and demand.deployment)
            got = self._explained(cache.get(key, ()), demand)
            if got is None:
                if key not in walks:
                    walks[key] = walk(self.fleet, self.state, demand, self.index, static)
                shape = demand.static
                if shape not in too_big:
                    too_big[shape] = bool(demand.gpus) and _too_big_for_any_host(kinds, demand)
                got = explain(self.fleet, self.state, demand, walks[key], never=too_big[shape])
                cache.setdefault(key, []).append((demand.cpus, demand.ram_mib, got))
            rejected, never, text, fits = got
            if fits is not None and self._place_at(demand, previous, *fits):
                cache.clear()  # the state changed: every shape is walked again
                walks.clear()
                continue
            described = descriptions.get(key)  # the shape says it all: written once per shape
            if described is None:
                described = descriptions[key] = demand.describe()
            gave = self.gave_way.get(demand.key)
            if gave is not None:  # it had a place, and gave it up for smaller ones
                text += (f"; it had a place on {gave[0]} and gave it to {gave[1]} smaller replicas that were left "
                         f"over (more replicas placed; more capacity of this kind places it again)")
            left = self.left_for_more.get(demand.key)
            if left is not None:  # it had a place, and left it in a rearrangement that places more
                text += (f"; it had a place on {left[0]} and left it so that this plan places {left[1]} more "
                         f"{'replica' if left[1] == 1 else 'replicas'}, taking no less VRAM, or at most "
                         f"{RUN_SLACK:.1%} less in all (more capacity of this kind places it again)")
            self.unplaced.append(Unplaced(demand.deployment, demand.replica, described, rejected,
                                          f"{demand.key}: {text}", never, previous))

    @staticmethod
    def _explained(known: list, demand: Demand):
        """An explanation already made for this shape that is exactly this demand's: the same CPUs and
        memory asked, or more of both where no host was short of either (then nothing depends on them)."""
        for cpus, ram, got in known:
            if (cpus, ram) == (demand.cpus, demand.ram_mib) or \
                    (demand.cpus <= cpus and demand.ram_mib <= ram and "free_cpu" not in got[0]
                     and "free_ram" not in got[0]):
                return got
        return None

    def _place_at(self, demand: Demand, previous, host, group) -> bool:
        gs = self.state.group_state(host.name, group) if group is not None else None
        positions = choose_devices(gs, demand, demand.allowed_on(host.name)) if gs is not None else []
        port = self.state.ports[host.name].lowest()
        if positions is None or port is None:
            return False
        self._commit_placed(demand, host.name, gs, positions, port, previous)
        return True


def _split_vram(state: FleetState, demand: Demand, hosts) -> frozenset[str]:
    """Of ``hosts`` (those a shape's walk turned away for want of free VRAM), the names of those with the VRAM
    a shared claim asks free on devices of a kind it may use, only not on one device (or on few enough):
    packing, not capacity, is what it lacks."""
    if demand.whole or not demand.gpus:
        return frozenset()
    need = demand.vram_mib * demand.gpus
    usable: dict[tuple, bool] = {}  # the filters read only the group's kind: asked once per kind
    out = set()
    for host in hosts:
        for gs in state.groups_of[host.name]:
            g = gs.group
            kind = (g.framework, g.vendor, g.model, g.vram_mib)
            ok = usable.get(kind)
            if ok is None:
                ok = usable[kind] = all(f(host, g, demand) for f in (FRAMEWORK, VENDOR, GPU_MODEL, VRAM_SIZE))
            if ok and gs.shareable_free() >= need:
                out.add(host.name)
                break
    return frozenset(out)


_HOST_LEVEL = ("free_cpu", "free_ram")  # filters that read only the host and the replica's CPUs or memory


def walk(fleet: Fleet, state: FleetState, demand: Demand, index: CandidateIndex | None = None,
         static_cache: dict | None = None) -> "Walk":
    """Each host's reach through the filters (the position of the first that rejects its best group,
    or their count), with the CPU and memory filters left out, and that group: what ``explain`` needs,
    shared by replicas of one shape that ask different CPUs or memory.

    Static filters are answered once per class of identical groups when an index is given (once per
    run when the caller passes ``static_cache``: they depend only on the demand's static shape), and the
    one-group hosts of a class they turn away are settled together, not visited one by one (two thirds of the
    fleet for a shape on the 2,000-host bench, where the walks had been an eighth of the plan's time)."""
    filters = applicable(demand)
    first_dynamic = next(i for i, f in enumerate(filters) if f in DYNAMIC)
    static_reach: dict[tuple, int] = {} if static_cache is None else \
        static_cache.setdefault(demand.static, {})
    n = len(filters)
    host_level = {i for i, f in enumerate(filters) if f.code in _HOST_LEVEL}
    # and the filters that pass on every host for this demand (no gpu_selection, no spread: hosts)
    trivial = {i for i, f in enumerate(filters) if (f is MANUAL and demand.manual is None)
               or (f is SPREAD and not demand.spread_hosts)}
    skip = host_level | trivial
    # the filters each host is asked, by position: all of them, or the dynamic ones once its class passed
    every = [(i, f) for i, f in enumerate(filters) if i not in skip]
    dynamic = [(i, f) for i, f in every if i >= first_dynamic]

    def reached(host, group, asked) -> int:
        for i, f in asked:
            if (group is None and f.gpu_only) or not f.check(host, group, demand, state):
                return i
        return n

    settled: dict[int, list] = {}
    sized_from = min(host_level, default=n)
    if index is None or not demand.gpus:
        open_: list[tuple] = []
        for host in fleet.hosts:
            groups = [None] if demand.gpus == 0 else (list(host.groups) or [None])
            reach = [reached(host, group, every) for group in groups]
            furthest = max(reach)
            best = groups[reach.index(furthest)]
            if furthest < sized_from:
                settled.setdefault(furthest, []).append(host)
            else:
                open_.append((host, furthest, best))
        return Walk(settled, open_)

    # with an index, a group's static reach is its class's, asked of the class's first group met
    class_reach: dict[tuple, int] = {}
    for key, lists in index.classes.items():
        got = static_reach.get(key)
        if got is None:
            host, group = lists.rep.host, lists.rep.group
            got = static_reach[key] = next((i for i, f in enumerate(filters[:first_dynamic])
                                            if not f.check(host, group, demand, state)), first_dynamic)
        class_reach[key] = got
    # class by class: a class a static filter turns away settles its one-group hosts at once; the others' hosts
    # are asked the dynamic filters one by one. Settled hosts are only counted and described (in any order);
    # the open ones are put back in fleet order, the order the search meets them in.
    single, several, bare = index.hosts_by_class()
    found: list[tuple] = []  # (position in the fleet, host, reach, group) of the open hosts
    for key, (hosts, entries) in single.items():
        got = class_reach[key]
        if got < first_dynamic:
            if got < sized_from:
                if hosts:
                    settled.setdefault(got, []).extend(hosts)
            else:
                found.extend((pos, host, got, group) for pos, host, group in entries)
            continue
        for pos, host, group in entries:
            furthest = reached(host, group, dynamic)
            if furthest < sized_from:
                settled.setdefault(furthest, []).append(host)
            else:
                found.append((pos, host, furthest, group))
    groups_of, class_of = state.groups_of, index.class_of
    for pos, host in several:
        furthest, best = -1, None
        for gs in groups_of[host.name]:
            got = class_reach[class_of[gs.gid]]
            if got >= first_dynamic:
                got = reached(host, gs.group, dynamic)
            if got > furthest:
                furthest, best = got, gs.group
        if furthest < sized_from:
            settled.setdefault(furthest, []).append(host)
        else:
            found.append((pos, host, furthest, best))
    for pos, host in bare:
        furthest = reached(host, None, every)
        if furthest < sized_from:
            settled.setdefault(furthest, []).append(host)
        else:
            found.append((pos, host, furthest, None))
    found.sort(key=itemgetter(0))
    return Walk(settled, [(host, furthest, group) for _, host, furthest, group in found])


class Walk:
    """Each host's reach through the filters for one shape (see ``walk``), split where the CPU and memory
    filters sit: ``settled`` hosts (by the position of the filter that rejects them) were turned away before
    those filters, whatever CPUs or memory a replica asks; only the ``open`` ones, (host, reach, group) in
    fleet order, are looked at again for each replica's asks."""

    __slots__ = ("settled", "open", "split", "texts", "_rows")

    def __init__(self, settled: dict[int, list], open_: list[tuple]):
        self.settled, self.open = settled, open_
        self._rows: list[tuple] | None = None
        #: what the filters before the CPU and memory ones say of the settled hosts, by position (``explain``)
        self.texts: dict[int, str] = {}
        #: names of the open hosts the free-VRAM filter turns away that have the VRAM, split over devices
        #: (``_split_vram``; set by the first ``explain``)
        self.split: frozenset[str] | None = None

    def rows(self, state: FleetState) -> list[tuple]:
        """The open hosts as (free CPUs, free MiB, reach, host, group), infinite where the host declares no
        capacity: what ``explain`` reads for each ask of the shape, looked up once. A walk lives only while
        the state does not change (the explanations drop their walks when they place a replica)."""
        if self._rows is None:
            cpu, ram = state.cpu_free, state.ram_free
            self._rows = [(inf if cpu[h.name] is None else cpu[h.name], inf if ram[h.name] is None else ram[h.name],
                           furthest, h, group) for h, furthest, group in self.open]
        return self._rows


def explain(fleet: Fleet, state: FleetState, demand: Demand, walked: "Walk | None" = None,
            index: CandidateIndex | None = None,
            never: bool | None = None) -> tuple[dict[str, int], bool, str, tuple | None]:
    """Count, per filter, the hosts it rejected (each host counted at the filter its best group reached).

    ``walked``: the shape's ``walk`` (made here when not given); the CPU and memory filters are applied
    to it for this replica's own asks. Returns (counts by reason code, whether no host could ever hold
    it, the sentence for people, and a (host, group) every filter accepts, if there is one: then the
    replica is not unplaced at all).
    """
    filters = applicable(demand)
    if walked is None:
        walked = walk(fleet, state, demand, index)
    cpu_i = next((i for i, f in enumerate(filters) if f.code == "free_cpu"), None)
    ram_i = next((i for i, f in enumerate(filters) if f.code == "free_ram"), None)
    rejected_hosts: dict[str, list] = {f.code: [] for f in filters}
    for furthest, hosts in walked.settled.items():
        rejected_hosts[filters[furthest].code] = list(hosts)
    fits = None
    # state.cpu_fits and ram_fits, inlined: this loop runs over most of the fleet once per ask
    need_cpu = demand.cpus - 1e-9 if demand.cpus and cpu_i is not None else None
    need_ram = demand.ram_mib if ram_i is not None else 0
    lists = [rejected_hosts[f.code] for f in filters]
    n = len(filters)
    for cpu_free, ram_free, furthest, host, group in walked.rows(state):
        # a host-level rejection counts where its filter sits: before what the host's best group reached
        if need_cpu is not None and cpu_i < furthest and cpu_free < need_cpu:
            furthest = cpu_i
        if need_ram and ram_i < furthest and ram_free < need_ram:
            furthest = ram_i
        if furthest < n:
            lists[furthest].append(host)
        elif fits is None:
            fits = (host, group)
    rejected = {code: len(hosts) for code, hosts in rejected_hosts.items() if hosts}
    # before the CPU and memory filters only settled hosts are counted: the same words for every ask of the
    # shape (some read every host they count: the frameworks of a thousand hosts without the replica's)
    settled_below = min((i for i in (cpu_i, ram_i) if i is not None), default=n)
    parts = []
    for i, f in enumerate(filters):
        hosts = lists[i]
        if not hosts:
            continue
        text = walked.texts.get(i) if i < settled_below else None
        if text is None:
            text = f.explain(len(hosts), demand, hosts)
            if i < settled_below:
                walked.texts[i] = text
        parts.append(text)
    busy = [h.name for code in ("free_vram", "free_port") for h in rejected_hosts.get(code, ())
            if h.name in state.held_by] if state.held_by else []
    if busy:
        stacks = sorted({s for name in busy for s in state.held_by[name]})
        parts.append(f"taken by stack {', '.join(stacks)} on {len(busy)} of those host{'s' if len(busy) != 1 else ''}")
    if walked.split is None:  # the same for every replica of the shape: asked once
        vram_i = next((i for i, f in enumerate(filters) if f.code == "free_vram"), None)
        walked.split = _split_vram(state, demand, [h for h, furthest, _ in walked.open if furthest == vram_i])
    split = sum(1 for h in rejected_hosts.get("free_vram", ()) if h.name in walked.split) if walked.split else 0
    if split:
        parts.append(f"{split} of those hosts {'have' if split != 1 else 'has'} that much VRAM free, split over "
                     "devices")
    if not fleet.hosts:
        parts = ["the inventory has no hosts"]
    if never is None:
        never = bool(demand.gpus) and _too_big_for_any_host(((h, g) for h in fleet.hosts for g in h.groups), demand)
    if never:
        kind = [g for h in fleet.hosts for g in h.groups
                if FRAMEWORK(h, g, demand) and VENDOR(h, g, demand) and GPU_MODEL(h, g, demand)]
        largest = max(g.vram_mib for g in kind)
        if largest < demand.min_vram_mib:
            why = (f"every {demand.framework} device is smaller than {format_mib(demand.min_vram_mib)} (the largest "
                   f"has {format_mib(largest)}); claim less VRAM per GPU, with more GPUs")
        else:
            most = max(len(g.devices) for g in kind if g.vram_mib >= demand.min_vram_mib)
            size = f" of {format_mib(demand.min_vram_mib)} or more" if demand.min_vram_mib else ""
            why = (f"the most {demand.framework} devices{size} on one host is {most}; a replica's GPUs must all "
                   "be on one host, multi-host replicas are not supported")
        text = f"no single host can ever hold {demand.describe()}: {why} — " + "; ".join(parts)
    else:
        text = f"no host fits {demand.describe()} — " + "; ".join(parts)
    return rejected, never, text, fits


def _too_big_for_any_host(groups: Iterable[tuple], demand: Demand) -> bool:
    """Hosts of the right kind exist, but none has enough (or big enough) devices, even empty and uncordoned.
    ``groups``: (host, group) pairs, every group of the fleet or one of each kind (the index's classes: these
    filters read only the group's vendor, model, size and device count)."""
    kind = [(h, g) for h, g in groups if FRAMEWORK(h, g, demand) and VENDOR(h, g, demand) and GPU_MODEL(h, g, demand)]
    return bool(kind) and not any(DEVICE_COUNT(h, g, demand) and VRAM_SIZE(h, g, demand) for h, g in kind)
