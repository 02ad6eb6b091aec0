"""SGLang's static memory fraction as GPUStack computes it for a GPU type.

A port of ``MemFractionStaticCalculator._cal_mem_fraction_static`` (gpustack/gpustack@47277d79,
``policies/candidate_selectors/sglang_resource_fit_selector.py``), itself SGLang's ``server_args``
default (sgl-project/sglang@037c398): a budget reserved for prefill chunks, CUDA graphs and parallel
ranks out of the smallest device of the type, less for vision models. GPUStack sizes SGLang replicas
with it (each GPU counts this share of its memory) and passes it as ``--mem-fraction-static``;
``tests/data/gpustack/sglang_mem_fraction.json`` holds GPUStack's own answers, run here.
"""
from __future__ import annotations

from backends.parameters import find_bool_parameter, find_parameter


def _int(parameters: list[str], *names: str) -> int | None:
    """GPUStack's find_int_parameter: the value when it is an integer."""
    given = find_parameter(parameters, *names)
    try:
        return int(given) if given is not None else None
    except ValueError:
        return None


def _defaults(mib: float, npu: bool, tp: int) -> tuple[int, int]:
    """(chunked prefill size, CUDA graph max batch) SGLang picks for a device of ``mib``."""
    if mib < 20 * 1024:
        return 2048, 8  # T4, 4080
    if npu and mib < 32 * 1024:
        return 32768, 16 if tp < 4 else 64  # Atlas A2B4
    if mib < 35 * 1024:
        return 2048, 24 if tp < 4 else 80  # A10, 4090, 5090
    if mib < 60 * 1024:
        return 4096, 32 if tp < 4 else 160  # A100 40 GB, L40
    if npu and mib < 64 * 1024:
        return 32768, 64 if tp < 4 else 128  # Atlas A2, A3
    if mib < 160 * 1024:
        return 8192, 256 if tp < 4 else 512  # H100, A100 80 GB, H200
    return 16384, 512  # B200, MI300


def mem_fraction_static(device_mib: float, npu: bool, parameters: list[str],
                        vision: tuple[int, int] | None = None) -> float | None:
    """The fraction for devices whose smallest has ``device_mib`` MiB; None when the deployment sets
    ``--mem-fraction-static`` itself. ``vision``: (layers, hidden size) of the model's vision tower."""
    if find_parameter(parameters, "mem-fraction-static"):
        return None
    tp = _int(parameters, "tp-size", "tensor-parallel-size") or 1
    pp = _int(parameters, "pp-size", "pipeline-parallel-size") or 1
    dp = _int(parameters, "dp-size", "data-parallel-size") or 1
    mib = round(device_mib, 2)
    chunked, graph_bs = _defaults(mib, npu, tp) if mib else (4096, 160)
    chunked = _int(parameters, "chunked-prefill-size") if _int(parameters, "chunked-prefill-size") is not None \
        else chunked
    graph_bs = _int(parameters, "cuda-graph-max-bs") if _int(parameters, "cuda-graph-max-bs") is not None \
        else graph_bs
    reserved = 512.0
    if chunked > 0:
        reserved += max(chunked, 2048) * 1.5
    reserved += graph_bs * 2
    reserved += tp * pp / 8 * 1024
    if find_bool_parameter(parameters, "enable-dp-attention"):
        reserved += graph_bs * dp * 3
        if graph_bs > 300:
            reserved += graph_bs * dp * 1.5
    if mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    speculative = find_parameter(parameters, "speculative-algorithm")
    if speculative is not None:
        reserved += 6 * 1024 if speculative == "STANDALONE" else (2 * 1024 if speculative != "NGRAM" else 0)
    if find_parameter(parameters, "enable-piecewise-cuda-graph"):
        reserved += (_int(parameters, "piecewise-cuda-graph-max-tokens") or 0) // 4
    fraction = round((mib - reserved) / mib, 3) if mib > 0 else 0.88
    if vision is not None:
        layers, hidden = vision
        ratio = layers * hidden ** 2 / (24 * 1024 ** 2)
        adjust = max(0.8, min(1.05, 1.0 - 0.1 * (ratio - 1.0)))
        fraction = round(fraction * 0.95 * adjust, 3)
    return fraction
