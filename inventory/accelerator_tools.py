"""Parse what vendors' tools print about their devices: nvidia-smi, rocm-smi, npu-smi.

Each parser takes the tool's exact output (see tests/data/probe/SOURCES.md for recorded samples)
and returns plain ``Found`` records: vendor, index, model, VRAM in MiB, UUID or unique id, PCI
bus id. Anything it cannot read is a ``ToolOutputError`` naming the line, never a guess.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass


class ToolOutputError(ValueError):
    """The tool printed something this parser does not understand."""


@dataclass(frozen=True)
class Found:
    vendor: str
    index: int
    model: str
    vram_mib: int
    uuid: str | None = None
    pci_bus_id: str | None = None
    driver: str | None = None


#: the query the probe runs (its columns, in order, are what parse_nvidia_smi reads)
NVIDIA_QUERY = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total,pci.bus_id,driver_version",
                "--format=csv,noheader,nounits"]
ROCM_QUERY = ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showuniqueid", "--showbus", "--json"]
NPU_QUERY = ["npu-smi", "info"]


def _bus(value: str) -> str | None:
    """00000000:18:00.0 (nvidia's 8-digit domain) -> 0000:18:00.0, lower case; N/A -> None."""
    value = value.strip()
    m = re.fullmatch(r"(?:[0-9A-Fa-f]{4})?([0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])", value)
    return m.group(1).lower() if m else None


def parse_nvidia_smi(text: str) -> list[Found]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split(", ")]
        if len(cols) != 6:
            raise ToolOutputError(f"nvidia-smi line {n}: expected 6 columns (index, uuid, name, memory.total, "
                                  f"pci.bus_id, driver_version), got {len(cols)}: {line[:120]!r}")
        index, uuid, name, memory, bus, driver = cols
        if not index.isdigit() or not memory.isdigit():
            raise ToolOutputError(f"nvidia-smi line {n}: index and memory.total must be numbers: {line[:120]!r}")
        out.append(Found("nvidia", int(index), name, int(memory), uuid if uuid.startswith(("GPU-", "MIG-")) else None,
                         _bus(bus), driver))
    return out


def parse_rocm_smi(text: str) -> list[Found]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ToolOutputError(f"rocm-smi --json is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ToolOutputError("rocm-smi --json: expected an object of cards")
    out = []
    for card, fields in sorted(data.items(), key=lambda kv: _card_index(kv[0])):
        if not card.startswith("card") or not isinstance(fields, dict):
            continue  # "system" and friends
        total = fields.get("VRAM Total Memory (B)")
        if total is None or not str(total).isdigit():
            raise ToolOutputError(f"rocm-smi {card}: no 'VRAM Total Memory (B)' (run with --showmeminfo vram)")
        model = fields.get("Card Series") or fields.get("Device Name") or fields.get("Card Model") or "unknown"
        unique = fields.get("Unique ID")
        out.append(Found("amd", _card_index(card), str(model), int(total) // (1024 * 1024),
                         None if unique in (None, "N/A") else str(unique), _bus(str(fields.get("PCI Bus", "")))))
    return out


def _card_index(card: str) -> int:
    m = re.fullmatch(r"card(\d+)", card)
    return int(m.group(1)) if m else 1 << 30


_NPU_HEAD = re.compile(r"^\|\s*(\d+)\s+(\S+)\s*\|\s*(\S+)\s*\|")
_NPU_CHIP = re.compile(r"^\|\s*(\d+)\s+(\d+)?\s*\|\s*([0-9A-Fa-f:.]+)\s*\|.*?(\d+)\s*/\s*(\d+)\s*\|\s*$")


def parse_npu_smi(text: str) -> list[Found]:
    """The chip table of ``npu-smi info``: a head line (NPU, name, health) then a chip line (chip, Phy-ID,
    bus id, …, HBM used / total). The device index containers use is the Phy-ID (/dev/davinciN)."""
    out = []
    head = None
    for line in text.splitlines():
        if "Process id" in line:
            break  # the process table follows
        c = _NPU_CHIP.match(line)
        if c and head is not None:
            phy = c.group(2) if c.group(2) is not None else c.group(1)
            out.append(Found("ascend", int(phy), head.group(2), int(c.group(5)), None, _bus(c.group(3))))
            head = None
            continue
        m = _NPU_HEAD.match(line)
        if m and not line.startswith("| NPU") and not line.startswith("| Chip"):
            head = m
    if not out and "npu-smi" in text:
        raise ToolOutputError("npu-smi info: no chip rows found")
    return out
