"""Read the header of a safetensors file: each tensor's dtype, shape and byte range, never the weights.

The format (huggingface/safetensors, README "Format"): 8 bytes little-endian header size N, then N
bytes of JSON ``{"name": {"dtype": "BF16", "shape": [...], "data_offsets": [begin, end]}, ...,
"__metadata__": {...}}``, then the data. The reference implementation refuses headers over 100 MB
and tensors whose offsets disagree with dtype × shape; so does this reader, with a message saying
which tensor is wrong. Two reads through ``read(offset, length)``: the size, then the JSON.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Callable

Read = Callable[[int, int], bytes]

MAX_HEADER = 100_000_000  # safetensors' MAX_HEADER_SIZE
#: dtype -> bits per element (safetensors' Dtype, with the 4- and 6-bit float formats)
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6,
              "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "C64": 64, "I64": 64, "U64": 64, "F64": 64}


class HeaderError(Exception):
    """Not a safetensors file this reader accepts; the message says why."""


@dataclass(frozen=True)
class SafetensorsInfo:
    #: parameters per dtype, e.g. {"BF16": 494032768}
    parameters: dict[str, int]
    #: the data section's size (the end of the last tensor)
    data_bytes: int
    #: 8 + the JSON header's size: where the data starts
    data_offset: int

    @property
    def file_bytes(self) -> int:
        return self.data_offset + self.data_bytes


def read_header(read: Read, name: str) -> SafetensorsInfo:
    head = read(0, 8)
    if len(head) < 8:
        raise HeaderError(f"{name}: {len(head)} bytes long; a safetensors file starts with an 8-byte header size")
    (size,) = struct.unpack("<Q", head)
    if size > MAX_HEADER:
        raise HeaderError(f"{name}: claims a {size}-byte header (safetensors allows {MAX_HEADER}); "
                          "not a safetensors file, or a damaged one")
    raw = read(8, size)
    if len(raw) < size:
        raise HeaderError(f"{name}: the file ends inside its {size}-byte header; it is truncated")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise HeaderError(f"{name}: the header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise HeaderError(f"{name}: the header is a JSON {type(header).__name__}, not an object")
    params: dict[str, int] = {}
    end = 0
    for tensor, info in header.items():
        if tensor == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in DTYPE_BITS:
            dtype = info.get("dtype") if isinstance(info, dict) else info
            raise HeaderError(f"{name}: tensor {tensor!r} has dtype {dtype!r}; safetensors defines "
                              + ", ".join(DTYPE_BITS))
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and o >= 0 for o in offsets)):
            raise HeaderError(f"{name}: tensor {tensor!r} needs a shape of non-negative integers and "
                              "data_offsets [begin, end]")
        n = 1
        for d in shape:
            n *= d
        bits = n * DTYPE_BITS[info["dtype"]]
        if offsets[1] - offsets[0] != (bits + 7) // 8:
            raise HeaderError(f"{name}: tensor {tensor!r} is {info['dtype']} {shape} ({(bits + 7) // 8} bytes) "
                              f"but its data_offsets span {offsets[1] - offsets[0]} bytes; the file is damaged")
        params[info["dtype"]] = params.get(info["dtype"], 0) + n
        end = max(end, offsets[1])
    return SafetensorsInfo(params, end, 8 + size)
