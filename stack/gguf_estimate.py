"""VRAM of a GGUF model fully offloaded to GPUs by llama.cpp, as GPUStack's gguf-parser estimates it.

GPUStack sizes GGUF models by running gguf-parser (``scheduler/calculator.py``) with its defaults:
``--ctx-size 8192 --parallel-size 4 --platform-footprint 150,500 --gpu-layers -1`` and
``--tensor-split`` of the chosen devices' VRAM; the deployment's own ``--ctx-size``, ``--parallel``,
``--ubatch-size``, ``--batch-size`` and ``--flash-attn`` replace them. This is a port of the part of
gguf-parser's ``EstimateLLaMACppRun`` and ``SummarizeItem`` that gives each GPU's non-UMA VRAM for a
full offload (gpustack/gguf-parser-go v0.11.0, ``file_estimate.go``; the version GPUStack shipped as
a binary in its wheels), and is checked against that binary's own output in
``tests/data/gguf/estimates.json``.

Two stages, plain data between them: :func:`facts` keeps what the estimate needs of a header (it is
what ``gpufleet models`` writes into ``stack/<stack>.models.yaml``), :func:`vram_per_gpu` computes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .gguf_header import ArrayInfo, GGUFHeader

PLATFORM_VRAM = 500 * 1024 ** 2  # GPUStack's --platform-footprint 150,500 (MiB)
CTX_SIZE = 8192  # GPUStack's default --ctx-size
PARALLEL = 4  # GPUStack's default --parallel-size
LOGICAL_BATCH = 2048
PHYSICAL_BATCH = 512
_IO = {"token_embd.weight", "output.weight", "output.bias", "output_norm.weight", "output_norm.bias"}
_ATTN = re.compile(r".*\.\d+\.attn_(norm|q|qkv)\.weight")
_FFN = re.compile(r".*\.\d+\.(attn_norm|ffn_norm|ffn_gate|ffn_up)\.weight")


class NotEstimable(Exception):
    """The file is of a kind this port does not size; the message says which and why."""


def _layers(header: GGUFHeader) -> list[tuple[str, list]]:
    """gguf-parser's ``Layers()``: ``blk.N``/``mm.N`` tensors grouped by layer, others alone, in file order."""
    groups: dict[str, list] = {}
    out: list[tuple[str, list]] = []
    for t in header.tensors:
        parts = t.name.split(".")
        if len(parts) >= 2 and parts[0] in ("blk", "mm"):
            key = f"{parts[0]}.{parts[1]}"
            if key not in groups:
                groups[key] = []
                out.append((key, groups[key]))
            groups[key].append(t)
        elif len(parts) >= 2 and parts[0] in ("v", "t", "decoder", "encoder"):
            raise NotEstimable(f"tensor {t.name}: a vision, T5 or BERT-style model; gpufleet sizes only "
                               "decoder language models from GGUF")
        else:
            out.append((t.name, [t]))
    return out


def facts(headers: list[GGUFHeader]) -> dict:
    """What the estimate needs of a file's header (or a split file's headers, in order): plain numbers."""
    header = GGUFHeader(headers[0].version, headers[0].metadata,
                        [t for h in headers for t in h.tensors], headers[0].data_offset)
    md = header.metadata
    typ = md.get("general.type", "model")
    arch = md.get("general.architecture", "llama")
    if typ != "model" or arch in ("clip", "controlvector"):
        raise NotEstimable(f"a GGUF {typ} of architecture {arch}; only language models are sized")
    if arch == "mamba":
        raise NotEstimable("a Mamba model; its state cache is not ported")

    def num(key: str, default: int = 0) -> int:
        v = md.get(f"{arch}.{key}", default)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    embd, heads = num("embedding_length"), num("attention.head_count")
    if not num("block_count") or not embd or not heads:
        raise NotEstimable(f"{arch}.block_count, .embedding_length or .attention.head_count is missing")
    vocab = num("vocab_size")
    if not vocab and isinstance(md.get("tokenizer.ggml.tokens"), ArrayInfo):
        vocab = md["tokenizer.ggml.tokens"].length
    layers = _layers(header)
    io = {name: ts[0] for name, ts in layers if name in _IO}
    tf = [(name, ts) for name, ts in layers if name not in _IO]
    out_bytes = sum(t.bytes for n, t in io.items() if n != "token_embd.weight")
    causal = md.get(f"{arch}.attention.causal", True) is not False
    if "output.weight" not in io and causal and "token_embd.weight" in io:
        out_bytes += io["token_embd.weight"].bytes  # tied embeddings: llama.cpp duplicates the input layer
    head = io.get("output.weight") or io.get("token_embd.weight")
    last = tf[-1][1] if tf else []
    return {
        "architecture": arch, "block_count": num("block_count"), "embedding_length": embd,
        "vocab_length": vocab, "context_length": num("context_length"), "head_count": heads,
        "head_count_kv": num("attention.head_count_kv", heads),
        "key_length": num("attention.key_length", embd // heads),
        "value_length": num("attention.value_length", embd // heads),
        "causal": causal, "weight_bytes": sum(h.model_bytes for h in headers), "parameters": header.parameters,
        "layer_bytes": [sum(t.bytes for t in ts) for _, ts in tf],
        "output_bytes": out_bytes, "output_rows": head.dims[-1] if head else 0,
        "last_layer": [{"name": t.name, "dims": list(t.dims), "bytes": t.bytes} for t in last
                       if _ATTN.search(t.name) or _FFN.search(t.name)],
    }


@dataclass(frozen=True)
class Options:
    ctx_size: int = CTX_SIZE
    parallel: int = PARALLEL
    ubatch: int = PHYSICAL_BATCH
    batch: int = LOGICAL_BATCH
    flash_attention: bool = False


def _upper_bound(values: list[float], x: float) -> int:
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def vram_per_gpu(f: dict, split: list[int], opts: Options = Options()) -> list[int]:
    """Each GPU's non-UMA VRAM in bytes for a full offload over devices weighted by ``split``."""
    total = sum(split)
    acc, fractions = 0, []
    for s in split:
        acc += s
        fractions.append(acc / total)
    n = len(split)
    batch = max(32, opts.batch)
    ubatch = batch if not f["causal"] else min(opts.ubatch, batch)
    pad = 256 if opts.flash_attention else 32  # llama.cpp pads the context (GGMLPadding)
    n_ctx = -(-opts.ctx_size // pad) * pad
    n_tokens = min(n_ctx, ubatch)
    n_kv, n_batch, n_outputs = n_ctx, n_tokens, n_tokens
    blocks = f["block_count"]
    layers = f["layer_bytes"]
    handle = [0] * n
    weight = [0] * n
    start = len(layers) - blocks
    for i in range(max(start, 0), len(layers)):
        j = min(_upper_bound(fractions, (i - start) / (blocks + 1)), n - 1)
        handle[j] += 1
        weight[j] += layers[i]
    weight[-1] += f["output_bytes"]
    footprint = [0] * n
    footprint[-1] = 4 * (f["vocab_length"] + f["embedding_length"]) * opts.parallel
    ekg = f["key_length"] * f["head_count_kv"]
    evg = f["value_length"] * f["head_count_kv"]
    kv = [2 * (ekg + evg) * n_kv * h for h in handle]  # F16 keys and values
    inp = 4 * f["embedding_length"] * n_batch + 4 * n_batch + 4 * n_kv * n_batch + 4 * n_outputs
    attn, ffn = 0, 0
    if opts.flash_attention:
        attn = 2 * n_kv * n_tokens
    for t in f["last_layer"]:
        name, dims, size = t["name"], t["dims"], t["bytes"]
        if _ATTN.search(name):
            if opts.flash_attention:
                attn += 4 * dims[-1] * n_tokens if name.endswith(".attn_norm.weight") else size
            elif name.endswith((".attn_q.weight", ".attn_qkv.weight")):
                attn += 2 * 4 * dims[0] * n_tokens + 4 * n_kv * n_tokens * f["head_count"] + \
                    2 * 2 * f["key_length"] * n_kv * f["head_count_kv"]
            else:
                attn += 4 * dims[-1] * n_tokens
        if _FFN.search(name):
            ffn += 4 * dims[-1] * n_tokens
    if opts.flash_attention:
        attn += 2 * f["key_length"] * n_kv * f["head_count_kv"] + 2 * f["value_length"] * n_kv * f["head_count_kv"]
    compute = max(attn, ffn)
    output = [0] * n
    output[-1] = 4 * f["output_rows"] * n_tokens
    out = []
    for j in range(n):
        cp = inp + max(compute, output[j])
        # SummarizeItem subtracts weight and computation for a local device past the first that
        # handles no layer, but only such devices ever get a position, so it never applies
        out.append(PLATFORM_VRAM + footprint[j] + weight[j] + kv[j] + cp)
    return out
