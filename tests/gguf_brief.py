"""Rebuild a GGUF header from gguf-parser's record of a real file.

GPUStack keeps gguf-parser's parse of real GGUF files from the Hub among its test fixtures
(``tests/fixtures/estimates/*/remote/brief/…``): every metadata key with its type and value, every
tensor's name, dimensions, type and offset, and where each array's elements start and how many
bytes they take (the elements themselves are left out). This module writes those back as GGUF bytes,
array elements filled to the recorded sizes, so that the header it makes has the real file's layout
byte for byte where it matters: every tensor info at its recorded position and the tensor data at
the recorded offset (``tensorDataStartOffset``). Tests check that against the record.
"""
from __future__ import annotations

import struct

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _strings(n: int, size: int) -> bytes:
    """``n`` strings taking ``size`` bytes with their length prefixes."""
    body = size - 8 * n
    base, extra = divmod(body, n)
    return b"".join(_string(b"t" * (base + (i < extra))) for i in range(n))


def header_bytes(brief: dict) -> bytes:
    h = brief["header"]
    out = [b"GGUF", struct.pack("<IQQ", h["version"], h["tensorCount"], h["metadataKVCount"])]
    for kv in h["metadataKV"]:
        out.append(_string(kv["key"]) + struct.pack("<I", kv["valueType"]))
        value = kv["value"]
        if kv["valueType"] == 8:
            out.append(_string(value))
        elif kv["valueType"] == 9:
            out.append(struct.pack("<IQ", value["type"], value["len"]))
            if value["type"] == 8:
                out.append(_strings(value["len"], value["size"]))
            else:
                out.append(b"\0" * value["size"])
        else:
            out.append(struct.pack(_SCALAR[kv["valueType"]], value))
    for t in brief["tensorInfos"]:
        out.append(_string(t["name"]) + struct.pack("<I", t["nDimensions"]))
        out.append(struct.pack(f"<{t['nDimensions']}Q", *t["dimensions"]))
        out.append(struct.pack("<IQ", t["type"], t["offset"]))
    data = b"".join(out)
    return data + b"\0" * brief["padding"]


def write_sparse(brief: dict, path: str) -> None:
    """The whole file as gguf-parser saw it: the header, then holes up to the recorded size."""
    with open(path, "wb") as f:
        f.write(header_bytes(brief))
        f.truncate(brief["size"])
