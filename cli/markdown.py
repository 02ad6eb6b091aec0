"""The placement as Markdown, ready to post as a pull-request comment.

What a reviewer needs first: what changes (new, moved with the reason, removed), what cannot be
placed and why, then per-host GPU use. Long lists are folded into ``<details>`` so a 2,000-host
plan stays a readable comment. Values from files are escaped for Markdown tables.
"""
from __future__ import annotations

from inventory.fleet import Fleet
from inventory.sizes import format_mib
from stack.placement.model import Placement

from .report import placement_json

#: rows shown before a section is folded into <details>
FOLD_AFTER = 20


def _cell(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _table(header: tuple, rows: list[tuple]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _section(title: str, header: tuple, rows: list[tuple]) -> list[str]:
    if not rows:
        return []
    table = _table(header, rows)
    if len(rows) > FOLD_AFTER:
        return [f"<details><summary>{title} ({len(rows)})</summary>", "", *table, "", "</details>", ""]
    return [f"**{title}** ({len(rows)})", "", *table, ""]


def placement_markdown(stack: str, fleet: Fleet, placement: Placement, lock_file: str) -> str:
    data = placement_json(stack, fleet, placement)
    s = data["summary"]
    icon = "❌" if s["unplaced"] else ("🔄" if s["new"] or s["moved"] or s["removed"] else "✅")
    lines = [f"### {icon} gpufleet plan for stack `{stack}`", "",
             f"{s['placed']} placed: **{s['new']} new**, **{s['moved']} moved**, {s['kept']} kept; "
             f"**{s['removed']} removed**; **{s['unplaced']} unplaced** (strategy {data['strategy']}, "
             f"against `{lock_file}`)", ""]
    gpus = lambda r: ",".join(map(str, r["gpus"])) or "-"  # noqa: E731
    new = [(f"{r['deployment']}/{r['replica']}", r["host"], gpus(r), r["port"])
           for r in data["replicas"] if r["status"] == "new"]
    moved = [(f"{r['deployment']}/{r['replica']}", r["previous_host"], r["host"], gpus(r), r["reason"])
             for r in data["replicas"] if r["status"] == "moved"]
    removed = [(f"{r['deployment']}/{r['replica']}", r["host"], gpus(r), r["port"]) for r in data["removed"]]
    unplaced = [(f"{u['deployment']}/{u['replica']}", u["demand"], u["message"].split(": ", 1)[-1])
                for u in data["unplaced"]]
    lines += _section("Cannot be placed", ("replica", "needs", "why"), unplaced)
    lines += _section("New", ("replica", "host", "GPUs", "port"), new)
    lines += _section("Moved", ("replica", "from", "to", "GPUs", "reason"), moved)
    lines += _section("Removed", ("replica", "host", "GPUs", "port"), removed)
    hosts = [(h["host"], h["state"], f"{h['devices_used']}/{h['devices']}" if h["devices"] else "cpu only",
              f"{format_mib(h['vram_claimed_mib'])} / {format_mib(h['vram_total_mib'])}" if h["devices"] else "-",
              h["replicas"]) for h in data["hosts"]]
    lines += ["<details><summary>Hosts: GPU use</summary>", "",
              *_table(("host", "state", "GPUs used", "VRAM claimed", "replicas"), hosts), "", "</details>"]
    return "\n".join(lines) + "\n"
