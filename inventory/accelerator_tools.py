"""Parse what vendors' tools print about their devices: nvidia-smi, amd-smi (rocm-smi, also Hygon's),
npu-smi, ixsmi (Iluvatar).

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
#: AMD's current tool (rocm-smi is deprecated in its favour): the static facts, then the list that has the UUIDs;
#: both print JSON, one document after the other (parse_amd_smi reads them in turn)
AMD_SMI_QUERY = ["amd-smi", "static", "--asic", "--bus", "--vram", "--board", "--driver", "--json"]
AMD_SMI_LIST = ["amd-smi", "list", "--json"]
NPU_QUERY = ["npu-smi", "info"]
#: Iluvatar's nvidia-smi alike, with the query GPUStack's detector runs (gpustack/detectors/ixsmi): units printed
IXSMI_QUERY = ["ixsmi", "--format=csv,noheader",
               "--query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu"]


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
    except (ValueError, RecursionError) as err:  # RecursionError: nested deeper than any tool prints
        raise ToolOutputError(f"rocm-smi --json is not JSON: {str(err)[:200]}") from None
    if not isinstance(data, dict):
        raise ToolOutputError("rocm-smi --json: expected an object of cards")
    out = []
    for card, fields in sorted(data.items(), key=lambda kv: _card_index(kv[0])):
        if not card.startswith("card") or not isinstance(fields, dict):
            continue  # "system" and friends
        unique = fields.get("Unique ID")
        unique = None if unique in (None, "N/A") else str(unique)
        bus = _bus(str(fields.get("PCI Bus", "")))
        if _is_hygon(fields):
            # Hygon's DTK prints its own keys, in MiB (gpustack/detectors/rocm_smi tells them apart the same way)
            total = fields.get("vram Total Memory (MiB)")
            if total is None or not str(total).isdigit():
                raise ToolOutputError(f"rocm-smi {card} (Hygon): no 'vram Total Memory (MiB)' (run with "
                                      "--showmeminfo vram)")
            out.append(Found("hygon", _card_index(card), str(fields.get("Card Series") or "unknown"), int(total),
                             unique, bus))
            continue
        total = fields.get("VRAM Total Memory (B)")
        if total is None or not str(total).isdigit():
            raise ToolOutputError(f"rocm-smi {card}: no 'VRAM Total Memory (B)' (run with --showmeminfo vram)")
        model = fields.get("Card Series") or fields.get("Device Name") or fields.get("Card Model") or "unknown"
        out.append(Found("amd", _card_index(card), str(model), int(total) // (1024 * 1024), unique, bus))
    return out


def parse_rocm_smi_used(text: str) -> dict[int, int]:
    """``rocm-smi --showmeminfo vram --json``: card index -> MiB in use (AMD's bytes, Hygon's MiB)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ToolOutputError(f"rocm-smi --json is not JSON: {str(err)[:200]}") from None
    if not isinstance(data, dict):
        raise ToolOutputError("rocm-smi --json: expected an object of cards")
    used = {}
    for card, fields in data.items():
        if not card.startswith("card") or not isinstance(fields, dict) or _card_index(card) == 1 << 30:
            continue
        amd, hygon = str(fields.get("VRAM Total Used Memory (B)", "")), str(fields.get("vram Total Used Memory (MiB)", ""))
        if amd.isdigit():
            used[_card_index(card)] = int(amd) // (1024 * 1024)
        elif hygon.isdigit():
            used[_card_index(card)] = int(hygon)
    return used


def _is_hygon(fields: dict) -> bool:
    """A Hygon DCU: its rocm-smi names use 'DCU'/'HCU' (GPUStack's test), its VRAM key is 'vram … (MiB)', its
    vendor Haiguang."""
    return "vram Total Memory (MiB)" in fields or "Haiguang" in str(fields.get("Card Vendor", "")) or \
        any("dcu" in str(k).lower() or "hcu" in str(k).lower() for k in fields)


def parse_ixsmi(text: str) -> list[Found]:
    """``ixsmi --format=csv,noheader --query-gpu=index,name,memory.total,…``: nvidia-smi's CSV with units
    (``16384 MiB``), as GPUStack's Iluvatar detector reads it."""
    import csv

    out = []
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 3:
            raise ToolOutputError(f"ixsmi line {n}: expected index, name, memory.total, …; got {','.join(row)[:120]!r}")
        index, name, memory = (c.strip() for c in row[:3])
        amount, _, unit = memory.partition(" ")
        if not index.isdigit() or not amount.isdigit() or unit.strip() not in ("MiB", ""):
            raise ToolOutputError(f"ixsmi line {n}: index and memory.total (MiB) must be numbers: "
                                  f"{','.join(row)[:120]!r}")
        out.append(Found("iluvatar", int(index), name, int(amount)))
    return out


def parse_amd(text: str) -> list[Found]:
    """What the probe's AMD section printed: amd-smi's JSON when the host has amd-smi, else rocm-smi's."""
    head = text.lstrip()[:1]
    if head == "[" or (head == "{" and '"gpu_data"' in text[:4096]):
        return parse_amd_smi(text)
    return parse_rocm_smi(text)


def parse_amd_smi(text: str) -> list[Found]:
    """``amd-smi static --asic --bus --vram --board --driver --json``, optionally followed by
    ``amd-smi list --json`` (for the UUIDs). Both print a list of per-GPU objects keyed by ``gpu``
    (amd-smi from ROCm 6.4 on wraps the list as ``{"gpu_data": [...]}``). VRAM is ``vram.size``:
    ``{"value": N, "unit": "MB"}`` in JSON, N = bytes // 2**20 (amdsmi's ``vram_size``), so MiB."""
    docs, pos, decoder = [], 0, json.JSONDecoder()
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as err:  # RecursionError: nested deeper than any tool prints
            raise ToolOutputError(f"amd-smi --json is not JSON: {str(err)[:200]}") from None
        if isinstance(doc, dict) and isinstance(doc.get("gpu_data"), list):
            doc = doc["gpu_data"]
        if not isinstance(doc, list) or not all(isinstance(g, dict) for g in doc):
            raise ToolOutputError("amd-smi --json: expected a list of GPUs (or {\"gpu_data\": [...]})")
        docs.append(doc)
    if not docs:
        raise ToolOutputError("amd-smi printed nothing")
    static, uuids = docs[0], {}
    for doc in docs[1:]:
        for g in doc:
            if isinstance(g.get("gpu"), int) and _known(g.get("uuid")):
                uuids[g["gpu"]] = str(g["uuid"])
    out = []
    for g in static:
        index = g.get("gpu")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ToolOutputError(f"amd-smi static: a GPU entry without a numeric 'gpu' id: {str(g)[:120]}")
        vram = g.get("vram")
        if not isinstance(vram, dict):
            raise ToolOutputError(f"amd-smi static gpu {index}: no 'vram' section (run it with --vram)")
        mib = _amd_smi_mib(vram.get("size"))
        if mib is None:
            raise ToolOutputError(f"amd-smi static gpu {index}: VRAM size {vram.get('size')!r} is not a size "
                                  "in MB (amd-smi could not read it from the driver)")
        asic = g.get("asic") if isinstance(g.get("asic"), dict) else {}
        board = g.get("board") if isinstance(g.get("board"), dict) else {}
        model = next((str(v) for v in (asic.get("market_name"), board.get("product_name")) if _known(v)), "unknown")
        bus = g.get("bus") if isinstance(g.get("bus"), dict) else {}
        driver = g.get("driver") if isinstance(g.get("driver"), dict) else {}
        out.append(Found("amd", index, model, mib, uuids.get(index), _bus(str(bus.get("bdf", ""))),
                         str(driver["version"]) if _known(driver.get("version")) else None))
    return sorted(out, key=lambda f: f.index)


def _known(value) -> bool:
    return value is not None and str(value).strip() not in ("", "N/A")


def _amd_smi_mib(size) -> int | None:
    """{"value": 64289, "unit": "MB"} (JSON), 64289 (before units were added), "64289 MB" (text)."""
    if isinstance(size, dict):
        value, unit = size.get("value"), str(size.get("unit", "MB"))
    elif isinstance(size, str):
        value, _, unit = size.strip().partition(" ")
        unit = unit or "MB"
    else:
        value, unit = size, "MB"
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return None
    scale = {"MB": 1, "GB": 1024}.get(unit.strip())
    return None if scale is None else value * scale


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
