"""Read the header of a GGUF file: metadata and tensor table, never the weights.

The format is ggml's (docs/gguf.md in ggml-org/ggml): magic ``GGUF``, a version (2 or 3: 64-bit
counts), the tensor count, the metadata count, the metadata key/value pairs, the tensor infos
(name, dimensions, ggml type, offset), then the tensor data at the next multiple of
``general.alignment`` (32 when absent). The bytes come from ``read(offset, length)`` so a local
file and an HTTP range read are the same to this module; it asks for more only as far as the
header goes (a Llama 3 header is about 8 MB, most of it tokenizer), and never past
``MAX_HEADER_BYTES``.

Hostile files get a :class:`HeaderError` naming what is wrong and where, never a traceback or an
endless read: every count and length is checked against what the bytes can hold before it is used.

The ggml type sizes are gguf-parser-go's table (``ggml.go``, gpustack/gguf-parser-go@8dc7a62),
which is ggml's ``type_traits``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable

Read = Callable[[int, int], bytes]

MAGIC = b"GGUF"
MAX_HEADER_BYTES = 256 * 1024 * 1024
MAX_STRING_BYTES = 16 * 1024 * 1024
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 16
MAX_DIMS = 4  # GGML_MAX_DIMS
FIRST_READ = 1 << 20

#: ggml type id -> (name, block size, type size)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 31: ("Q4_0_4_4", 32, 18), 32: ("Q4_0_4_8", 32, 18), 33: ("Q4_0_8_8", 32, 18),
    34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 36: ("IQ4_NL_4_4", 32, 18),
    37: ("IQ4_NL_4_8", 32, 18), 38: ("IQ4_NL_8_8", 32, 18), 39: ("MXFP4", 32, 17),
}

# metadata value types: id -> struct format (scalars), 8 string, 9 array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
            12: "<d"}
_STRING, _ARRAY = 8, 9


class HeaderError(Exception):
    """The file is not a GGUF file this reader accepts; the message says why and where."""


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]
    type: int
    offset: int

    @property
    def elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n

    @property
    def bytes(self) -> int:
        """ggml's row size rule: ``type_size × ne0 / block_size × ne1 × …``."""
        _, block, size = GGML_TYPES[self.type]
        n = size * self.dims[0] // block if self.dims else size
        for d in self.dims[1:]:
            n *= d
        return n


@dataclass(frozen=True)
class ArrayInfo:
    """An array value: its element type and length (the elements are skipped, not kept)."""

    type: int
    length: int


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, object] = field(default_factory=dict)
    tensors: list[Tensor] = field(default_factory=list)
    #: where the tensor data starts (the header's size with its padding)
    data_offset: int = 0

    @property
    def model_bytes(self) -> int:
        """The tensor data's size: the end of the last tensor (gguf-parser's ModelSize)."""
        return max((t.offset + t.bytes for t in self.tensors), default=0)

    @property
    def parameters(self) -> int:
        return sum(t.elements for t in self.tensors)


class _Cursor:
    def __init__(self, read: Read, name: str):
        self.read, self.name = read, name
        self.buf = b""
        self.pos = 0
        self.eof = False

    def need(self, n: int, what: str) -> None:
        end = self.pos + n
        if end > MAX_HEADER_BYTES:
            raise HeaderError(f"{self.name}: {what} at byte {self.pos} would take the header past "
                              f"{MAX_HEADER_BYTES >> 20} MiB; not a GGUF file gpufleet reads")
        while len(self.buf) < end and not self.eof:
            want = max(end - len(self.buf), min(max(len(self.buf), FIRST_READ), 16 << 20))
            chunk = self.read(len(self.buf), want)
            if len(chunk) < want:
                self.eof = True
            self.buf += chunk
        if len(self.buf) < end:
            raise HeaderError(f"{self.name}: the file ends at byte {len(self.buf)} inside {what} "
                              f"(byte {self.pos}); it is truncated or not a GGUF file")

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        if n > MAX_STRING_BYTES:
            raise HeaderError(f"{self.name}: {what} at byte {self.pos - 8} claims {n} bytes "
                              f"(more than {MAX_STRING_BYTES >> 20} MiB); the file is damaged")
        return self.take(n, what).decode("utf-8", errors="replace")


def _value(cur: _Cursor, vtype: int, key: str):
    if vtype in _SCALARS:
        return cur.unpack(_SCALARS[vtype], f"the value of {key}")
    if vtype == _STRING:
        return cur.string(f"the value of {key}")
    if vtype == _ARRAY:
        etype = cur.unpack("<I", f"the array type of {key}")
        n = cur.unpack("<Q", f"the array length of {key}")
        if etype in _SCALARS:
            size = struct.calcsize(_SCALARS[etype])
            if n * size > MAX_HEADER_BYTES:
                raise HeaderError(f"{cur.name}: {key} claims {n} elements; the file is damaged")
            cur.need(n * size, f"the array {key}")
            cur.pos += n * size
        elif etype == _STRING:
            if n > MAX_HEADER_BYTES // 8:
                raise HeaderError(f"{cur.name}: {key} claims {n} strings; the file is damaged")
            for _ in range(n):
                length = cur.unpack("<Q", f"a string of {key}")
                if length > MAX_STRING_BYTES:
                    raise HeaderError(f"{cur.name}: a string of {key} claims {length} bytes; the file is damaged")
                cur.need(length, f"a string of {key}")
                cur.pos += length
        else:
            raise HeaderError(f"{cur.name}: {key} is an array of type {etype}, which gpufleet does not read "
                              "(nested arrays are not used by any model file)")
        return ArrayInfo(etype, n)
    raise HeaderError(f"{cur.name}: {key} has value type {vtype}, which GGUF does not define; "
                      "the file is damaged or newer than this reader")


def read_header(read: Read, name: str) -> GGUFHeader:
    """Parse a GGUF header through ``read(offset, length)``; ``name`` is shown in errors."""
    cur = _Cursor(read, name)
    magic = cur.take(4, "the magic")
    if magic != MAGIC:
        if magic == b"FUGG":
            raise HeaderError(f"{name}: a big-endian GGUF file; llama.cpp on these hosts reads little-endian ones")
        raise HeaderError(f"{name}: does not start with GGUF (found {magic!r}); not a GGUF file")
    version = cur.unpack("<I", "the version")
    if version not in (2, 3):
        raise HeaderError(f"{name}: GGUF version {version}; gpufleet reads versions 2 and 3 "
                          "(convert the file with a current llama.cpp)")
    n_tensors = cur.unpack("<Q", "the tensor count")
    n_kv = cur.unpack("<Q", "the metadata count")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise HeaderError(f"{name}: claims {n_tensors} tensors and {n_kv} metadata entries; the file is damaged")
    header = GGUFHeader(version)
    for _ in range(n_kv):
        key = cur.string("a metadata key")
        vtype = cur.unpack("<I", f"the type of {key}")
        header.metadata[key] = _value(cur, vtype, key)
    for i in range(n_tensors):
        tname = cur.string(f"the name of tensor {i}")
        n_dims = cur.unpack("<I", f"the dimension count of {tname}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise HeaderError(f"{name}: tensor {tname} has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS}); "
                              "the file is damaged")
        dims = tuple(cur.unpack("<Q", f"a dimension of {tname}") for _ in range(n_dims))
        ttype = cur.unpack("<I", f"the type of {tname}")
        if ttype not in GGML_TYPES:
            raise HeaderError(f"{name}: tensor {tname} has ggml type {ttype}, which gpufleet does not know; "
                              "the file is damaged or newer than this reader")
        block = GGML_TYPES[ttype][1]
        if dims[0] % block:
            raise HeaderError(f"{name}: tensor {tname} has {dims[0]} columns, not a multiple of its type's "
                              f"block of {block}; the file is damaged")
        offset = cur.unpack("<Q", f"the offset of {tname}")
        header.tensors.append(Tensor(tname, dims, ttype, offset))
    align = header.metadata.get("general.alignment", 32)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise HeaderError(f"{name}: general.alignment is {align!r}; it must be a power of two")
    header.data_offset = (cur.pos + align - 1) // align * align
    return header

