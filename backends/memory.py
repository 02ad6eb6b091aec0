"""How each engine is told how much GPU memory it may take, so a shared-GPU claim is enforced.

A claim such as ``vram: 30GiB`` lets two replicas share a GPU only if each engine stays within
its share. vLLM preallocates ``--gpu-memory-utilization`` (default 0.9) of the whole device
(vllm/engine/arg_utils.py, EngineArgs.gpu_memory_utilization: "the fraction of GPU memory to be
used for the model executor"), SGLang ``--mem-fraction-static`` (sglang/srt/server_args.py:
"the fraction of the memory used for static allocation (model weights and KV cache memory
pool)"). gpufleet sets that fraction to claim / device size, rounded down.

An engine with no such setting cannot be held to a share: a sized claim on it is refused
unless the deployment says ``share: advisory`` (the engine allocates only what it needs, and
the operator accepts that nothing enforces the claim).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryKnob:
    flag: str
    #: the engine's own default when the flag is absent (what it would take)
    default_fraction: float


MEMORY_KNOBS: dict[str, MemoryKnob] = {
    "vLLM": MemoryKnob("--gpu-memory-utilization", 0.9),
    "SGLang": MemoryKnob("--mem-fraction-static", 0.88),
}


def knob_for(backend: str) -> MemoryKnob | None:
    return MEMORY_KNOBS.get(backend)


def fraction(claim_mib: int, device_mib: int) -> float:
    """claim / device, rounded down to 3 decimals: never more than the claim."""
    return math.floor(claim_mib / device_mib * 1000) / 1000
