"""Which version a deployment gets when it names none: GPUStack's resolution.

``InferenceBackend.resolve_target_version`` (gpustack/schemas/inference_backend.py): the
``default_version`` when it names a version; otherwise, for a backend that is not built-in, the
newest version by gpustack-runtime's ``compare_versions`` (gpustack_runtime/deployer/__utils__.py,
v0.2.6), ported here; a built-in backend has no such fallback.
"""
from __future__ import annotations

import functools
from typing import Iterable


def _explode(v: str) -> list:
    v = v.replace("-", ".").replace("_", ".").replace("+", ".")
    out: list = []
    for x in v.split("."):
        if x.isdigit():
            out.append(int(x))
        elif x.startswith("alpha"):
            out.append([-3, *[ord(c) for c in x[5:]]])
        elif x.startswith("beta"):
            out.append([-2, *[ord(c) for c in x[4:]]])
        elif x.startswith("rc"):
            out.append([-1, *[ord(c) for c in x[2:]]])
        else:
            out.append([ord(c) for c in x])
    return out


def compare_versions(v1: str | None, v2: str | None) -> int:
    """-1, 0 or 1, as gpustack-runtime compares versions ("v" prefix ignored, rc < release, ...)."""
    v1, v2 = (v1 or "").removeprefix("v"), (v2 or "").removeprefix("v")
    if v1 == v2:
        return 0
    p1, p2 = _explode(v1), _explode(v2)
    if len(p1) > len(p2):
        p2 += [0] * (len(p1) - len(p2))
    elif len(p2) > len(p1):
        p1 += [0] * (len(p2) - len(p1))
    for a, b in zip(p1, p2):
        if isinstance(a, list) != isinstance(b, list):
            a, b = (a, [b]) if isinstance(a, list) else ([a], b)
        if a < b:
            return -1
        if a > b:
            return 1
    return 0


def newest(versions: Iterable[str]) -> str | None:
    """The newest version: GPUStack walks the list keeping the greater; on a comparison error, sorts the names."""
    names = list(versions)
    if not names:
        return None
    try:
        return functools.reduce(lambda best, v: v if compare_versions(v, best) > 0 else best, names[1:], names[0])
    except TypeError:
        return sorted(names)[-1]
