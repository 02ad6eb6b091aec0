"""Briefs of GGUF files laid out as llama.cpp's converter lays out two public models.

The Llama 3.1 brief in tests/data/gguf is a record of a real file. These two are written here, from
the models' published configurations and llama.cpp's tensor naming (``convert_hf_to_gguf.py``), to
reach the estimate's other branches: Qwen2.5-0.5B-Instruct ties its output to the embeddings (no
``output.weight``: llama.cpp duplicates the input layer) and has attention biases; Phi-3-mini fuses
Q, K and V (``attn_qkv``) and gate and up. gguf-parser's figures for them are in estimates.json
like the real file's.

    python -m tests.gguf_synth   # rewrites tests/data/gguf/*.synthetic.brief.json
"""
from __future__ import annotations

import json
from pathlib import Path

F32, Q8_0, Q4_K, Q6_K = 0, 8, 12, 14
_TYPE = {F32: (1, 4), Q8_0: (32, 34), Q4_K: (256, 144), Q6_K: (256, 210)}


def _bytes(dims, t):
    block, size = _TYPE[t]
    n = size * dims[0] // block
    for d in dims[1:]:
        n *= d
    return n


def _kv(key, vtype, value):
    return {"key": key, "valueType": vtype, "value": value}


def _brief(metadata: list, tensors: list[tuple[str, list[int], int]], vocab: int) -> dict:
    kvs = metadata + [_kv("tokenizer.ggml.model", 8, "gpt2"),
                      _kv("tokenizer.ggml.tokens", 9, {"type": 8, "len": vocab, "size": vocab * 14})]
    infos, offset = [], 0
    for name, dims, t in tensors:
        infos.append({"name": name, "nDimensions": len(dims), "dimensions": dims, "type": t, "offset": offset})
        offset += (_bytes(dims, t) + 31) // 32 * 32
    # header length, to place the data at the next multiple of 32
    from tests.gguf_brief import header_bytes
    draft = {"header": {"version": 3, "tensorCount": len(infos), "metadataKVCount": len(kvs), "metadataKV": kvs},
             "tensorInfos": infos, "padding": 0}
    n = len(header_bytes(draft))
    padding = (32 - n % 32) % 32
    return {**draft, "padding": padding, "tensorDataStartOffset": n + padding, "size": n + padding + offset}


def qwen25_05b() -> dict:
    """Qwen/Qwen2.5-0.5B-Instruct (config.json: 24 layers, hidden 896, 14 heads, 2 KV heads, FFN 4864,
    vocabulary 151936, tie_word_embeddings) as Q8_0."""
    a, h, ff, kv = "qwen2", 896, 4864, 128
    md = [_kv("general.architecture", 8, a), _kv("general.name", 8, "Qwen2.5 0.5B Instruct"),
          _kv(f"{a}.block_count", 4, 24), _kv(f"{a}.context_length", 4, 32768), _kv(f"{a}.embedding_length", 4, h),
          _kv(f"{a}.feed_forward_length", 4, ff), _kv(f"{a}.attention.head_count", 4, 14),
          _kv(f"{a}.attention.head_count_kv", 4, 2), _kv("general.file_type", 4, 7)]
    ts = [("token_embd.weight", [h, 151936], Q8_0)]
    for i in range(24):
        p = f"blk.{i}."
        ts += [(p + "attn_norm.weight", [h], F32), (p + "attn_q.weight", [h, h], Q8_0), (p + "attn_q.bias", [h], F32),
               (p + "attn_k.weight", [h, kv], Q8_0), (p + "attn_k.bias", [kv], F32),
               (p + "attn_v.weight", [h, kv], Q8_0), (p + "attn_v.bias", [kv], F32),
               (p + "attn_output.weight", [h, h], Q8_0), (p + "ffn_norm.weight", [h], F32),
               (p + "ffn_gate.weight", [h, ff], Q8_0), (p + "ffn_up.weight", [h, ff], Q8_0),
               (p + "ffn_down.weight", [ff, h], Q8_0)]
    ts.append(("output_norm.weight", [h], F32))
    return _brief(md, ts, 151936)


def phi3_mini() -> dict:
    """microsoft/Phi-3-mini-4k-instruct (32 layers, hidden 3072, 32 heads, FFN 8192, vocabulary 32064;
    metadata as in llama.cpp's ggml-vocab-phi-3.gguf) as Q4_K_M-like Q4_K/Q6_K."""
    a, h, ff = "phi3", 3072, 8192
    md = [_kv("general.architecture", 8, a), _kv("general.name", 8, "Phi3"), _kv(f"{a}.context_length", 4, 4096),
          _kv(f"{a}.embedding_length", 4, h), _kv(f"{a}.feed_forward_length", 4, ff), _kv(f"{a}.block_count", 4, 32),
          _kv(f"{a}.attention.head_count", 4, 32), _kv(f"{a}.attention.head_count_kv", 4, 32),
          _kv(f"{a}.rope.dimension_count", 4, 96), _kv("general.file_type", 4, 15)]
    ts = [("token_embd.weight", [h, 32064], Q4_K)]
    for i in range(32):
        p = f"blk.{i}."
        ts += [(p + "attn_norm.weight", [h], F32), (p + "attn_qkv.weight", [h, 3 * h], Q4_K),
               (p + "attn_output.weight", [h, h], Q4_K), (p + "ffn_norm.weight", [h], F32),
               (p + "ffn_up.weight", [h, 2 * ff], Q4_K), (p + "ffn_down.weight", [ff, h], Q6_K)]
    ts += [("output_norm.weight", [h], F32), ("output.weight", [h, 32064], Q6_K)]
    return _brief(md, ts, 32064)


if __name__ == "__main__":
    out = Path(__file__).parent / "data" / "gguf"
    for name, brief in (("Qwen2.5-0.5B-Instruct-Q8_0", qwen25_05b()), ("Phi-3-mini-4k-instruct-Q4_K_M", phi3_mini())):
        (out / f"{name}.synthetic.brief.json").write_text(json.dumps(brief, separators=(",", ":")) + "\n")
