"""VRAM of a MindIE replica as GPUStack estimates it, and how many NPUs hold it.

A port of ``AscendMindIEResourceFitSelector._estimate_usage`` and ``_select_single_worker``
(gpustack/gpustack@47277d79, ``policies/candidate_selectors/ascend_mindie_resource_fit_selector.py``)
for what gpufleet runs: MindIE's default serving parameters (gpufleet refuses MindIE's own
parameters), the sequence length from the model's config.json capped at 8192, one host.

    VRAM = footprint (3 GiB, or RESERVED_MEMORY_GB) + weights + KV cache + computation

with the KV cache ``heads × head size × layers × tokens × cache dtype`` by attention type (MHA, GQA,
MQA, MLA as GPUStack's ``ModelParameters.get_attention_type`` tells them) and the computation
``max_batch_size (200) × cache_block_size (128) × layers × heads × head size × activation dtype``.
Each NPU counts ``npu_memory_fraction`` (0.8, or NPU_MEMORY_FRACTION) of its memory; the fewest
NPUs whose shares add up and that divide the attention heads are taken.
``tests/data/gpustack/mindie_estimate.json`` holds GPUStack's own method's answers, run here.
"""
from __future__ import annotations

FOOTPRINT = 3 * 1024 ** 3
NPU_MEMORY_FRACTION = 0.8
MAX_SEQ_LEN = 8192
MAX_BATCH_SIZE = 200
CACHE_BLOCK_SIZE = 128


def attention_type(t) -> str:
    """GPUStack's get_attention_type; ``num_key_value_heads`` defaults to 1 there, as here."""
    heads, kv = t.num_attention_heads, t.num_key_value_heads if t.num_key_value_heads is not None else 1
    if heads:
        if kv == 1:
            return "MQA"
        if 1 < kv < heads and heads % kv == 0:
            return "GQA"
        if kv == heads:
            return "MLA" if t.q_lora_rank and t.kv_lora_rank else "MHA"
    return "UNK"


def _safe_int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def vram_request(t, weight_bytes: int, env: dict[str, str]) -> int:
    """Bytes of NPU memory one replica asks, from the text config's facts ``t``."""
    claim = _safe_int(env.get("GPUSTACK_MODEL_VRAM_CLAIM"))
    if claim > 0:
        return claim
    footprint = FOOTPRINT
    if "RESERVED_MEMORY_GB" in env and _safe_int(env["RESERVED_MEMORY_GB"]) > 0:
        footprint = _safe_int(env["RESERVED_MEMORY_GB"]) * 1024 ** 3
    tokens = min(t.max_len or 0, MAX_SEQ_LEN)
    layers = t.num_hidden_layers or 0
    d_head = t.head_dim or 0
    t_size = 4 if t.torch_dtype in ("float32", "float") else 2
    ct_size = 1 if (t.kv_quant_type or "").lower() == "c8" else t_size
    kind = attention_type(t)
    n_heads = {"MHA": 2 * (t.num_attention_heads or 0), "GQA": 2 * (t.num_key_value_heads or 0), "MQA": 2}.get(kind, 1)
    if kind == "MLA":
        d_head = 2 * (t.qk_nope_head_dim or 0)  # GPUStack adds qk_nope_head_dim to itself
    kv_cache = n_heads * d_head * layers * tokens * ct_size
    at_size = 1 if (t.quantize or "").lower().startswith("w8a8") else t_size
    computation = MAX_BATCH_SIZE * CACHE_BLOCK_SIZE * (layers * n_heads * d_head * at_size)
    return footprint + weight_bytes + kv_cache + computation


def npu_fraction(env: dict[str, str]) -> float:
    try:
        return float(env["NPU_MEMORY_FRACTION"]) if "NPU_MEMORY_FRACTION" in env else NPU_MEMORY_FRACTION
    except ValueError:
        return NPU_MEMORY_FRACTION
