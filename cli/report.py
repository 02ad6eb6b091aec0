"""How a placement is shown: the human table and the JSON object (schema in the README)."""
from __future__ import annotations

from inventory.fleet import Fleet
from inventory.sizes import format_mib
from stack.placement.model import Placement

from .tables import render_table


def placement_json(stack: str, fleet: Fleet, placement: Placement) -> dict:
    hosts = _host_usage(fleet, placement)
    statuses = [a.status for a in placement.assignments]
    return {
        "stack": stack,
        "strategy": placement.strategy,
        "summary": {
            "replicas": len(placement.assignments) + len(placement.unplaced),
            "placed": len(placement.assignments), "unplaced": len(placement.unplaced),
            "kept": statuses.count("kept"), "new": statuses.count("new"), "moved": statuses.count("moved"),
            "removed": len(placement.removed),
        },
        "replicas": [{
            "deployment": a.deployment, "replica": a.replica, "host": a.host,
            "address": fleet.host(a.host).address, "vendor": a.vendor, "gpus": list(a.gpus),
            "uuids": list(a.uuids), "vram_per_gpu_mib": a.vram_mib, "whole": a.whole, "port": a.port,
            "status": a.status, "reason": a.reason or None, "previous_host": a.previous_host,
        } for a in placement.assignments],
        "unplaced": [{
            "deployment": u.deployment, "replica": u.replica, "demand": u.demand, "rejected": u.rejected,
            "never_fits": u.never_fits, "message": u.message, "previous_host": u.previous_host,
        } for u in placement.unplaced],
        "removed": [{"deployment": r.deployment, "replica": r.replica,
                     "host": r.host, "gpus": list(r.gpus), "port": r.port} for r in placement.removed],
        "hosts": hosts,
    }


def _host_usage(fleet: Fleet, placement: Placement) -> list[dict]:
    by_host: dict[str, list] = {}
    for a in placement.assignments:
        by_host.setdefault(a.host, []).append(a)
    out = []
    for h in fleet.hosts:
        mine = by_host.get(h.name, [])
        used = {(a.vendor, g) for a in mine for g in a.gpus}
        out.append({
            "host": h.name, "state": h.state, "devices": h.device_count(), "devices_used": len(used),
            "vram_total_mib": sum(g.vram_mib * len(g.devices) for g in h.groups),
            "vram_claimed_mib": sum(a.vram_mib * len(a.gpus) for a in mine),
            "replicas": len(mine), "ports_used": len(mine), "ports_total": h.port_end - h.port_start + 1,
            # claimed of what replicas may use (capacity less reserved); None: not declared
            "cpus_claimed": sum(a.claim.cpus for a in mine if a.claim), "cpus_allocatable": h.allocatable_cpus,
            "ram_claimed_mib": sum(a.claim.ram_mib for a in mine if a.claim),
            "ram_allocatable_mib": h.allocatable_ram_mib,
        })
    return out


def placement_text(stack: str, fleet: Fleet, placement: Placement, inventory_file: str) -> str:
    data = placement_json(stack, fleet, placement)
    lines = [f"Stack {stack} · strategy {placement.strategy} · inventory {inventory_file}", ""]
    rows = [("DEPLOYMENT", "REPLICA", "HOST", "GPUS", "VRAM/GPU", "PORT", "STATUS")]
    for r in data["replicas"]:
        gpus = ",".join(map(str, r["gpus"])) or "-"
        vram = "-" if not r["gpus"] else (f"whole ({format_mib(r['vram_per_gpu_mib'])})" if r["whole"]
                                          else format_mib(r["vram_per_gpu_mib"]))
        status = r["status"]
        if status == "moved":
            status += f" ({r['reason']}; was on {r['previous_host']})"
        rows.append((r["deployment"], str(r["replica"]), r["host"], gpus, vram, str(r["port"]), status))
    for rem in data["removed"]:
        rows.append((rem["deployment"], str(rem["replica"]), rem["host"], ",".join(map(str, rem["gpus"])) or "-",
                     "-", str(rem["port"]), "removed"))
    lines.append(_table(rows))
    lines += ["", "Hosts"]
    sized = any(h["cpus_allocatable"] is not None or h["ram_allocatable_mib"] is not None for h in data["hosts"])
    host_rows = [("HOST", "STATE", "GPUS USED", "VRAM CLAIMED", *(("CPUS", "MEMORY") if sized else ()), "REPLICAS")]
    for h in data["hosts"]:
        gpus = f"{h['devices_used']}/{h['devices']}" if h["devices"] else "cpu only"
        vram = f"{format_mib(h['vram_claimed_mib'])} / {format_mib(h['vram_total_mib'])}" if h["devices"] else "-"
        extra = ()
        if sized:
            cpus = "-" if h["cpus_allocatable"] is None else f"{h['cpus_claimed']:g} / {h['cpus_allocatable']:g}"
            used = format_mib(h["ram_claimed_mib"]) if h["ram_claimed_mib"] else "0"
            ram = "-" if h["ram_allocatable_mib"] is None else f"{used} / {format_mib(h['ram_allocatable_mib'])}"
            extra = (cpus, ram)
        host_rows.append((h["host"], h["state"], gpus, vram, *extra, str(h["replicas"])))
    lines.append(_table(host_rows))
    if data["unplaced"]:
        lines += ["", "Unplaced"]
        lines += [u["message"] for u in data["unplaced"]]
    s = data["summary"]
    lines += ["", f"{s['placed']} placed ({s['kept']} kept, {s['new']} new, {s['moved']} moved), "
                  f"{s['removed']} removed, {s['unplaced']} unplaced"]
    return "\n".join(lines)



def _table(rows: list[tuple]) -> str:
    return render_table(rows[0], rows[1:])
