"""The command lines of GPUStack's built-in vLLM and SGLang, built as GPUStack's workers build them.

Ported from gpustack/worker/backends/vllm.py (``VLLMServer._build_command_args``,
``get_auto_parallelism_arguments``, ``get_access_log_arguments``, ``get_cache_report_arguments``)
and gpustack/worker/backends/sglang.py (the same names, and ``get_metrics_arguments``), for one
replica on one host. In GPUStack's order: the model, what GPUStack injects (parallelism only
when the user gave none and the replica has several GPUs; access-log filter and cache report
from the versions that have them; SGLang's metrics and memory fraction), the user's
parameters, then ``--host``/``--port``/``--served-model-name`` unless the user set them.

The context cap (``_build_max_model_len_arguments``: ``--max-model-len 8192`` / ``--context-length
8192`` when the model's config.json allows more and the user set none) depends on a file that is
on the host only after the fetch: the builders put ``CONTEXT_CAP`` where the value goes, and
``stack.containers.finalize_command`` settles it from what the fetch read (``max_model_len``).
Multi-host (Ray, MP) arguments do not apply: a gpufleet replica lives on one host.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .parameters import find_bool_parameter, find_parameter
from .versions import compare_versions


@dataclass(frozen=True)
class BuiltinContext:
    model_path: str
    model_name: str
    worker_ip: str
    port: int
    gpu_count: int
    version: str
    #: the user's parameters: backend defaults merged with the deployment's, formatted
    parameters: tuple[str, ...]
    env: dict
    #: a shared claim's memory fraction, when gpufleet enforces one
    memory_fraction: float | None = None
    #: the replica's first device as the engine inside numbers it (VoxBox's --device)
    first_device: str | None = None
    #: the model's config.json will be read after the fetch: mark where GPUStack's 8192 cap goes
    context_cap: bool = False


#: the cap's value until the fetch has read config.json (stack.containers.finalize_command)
CONTEXT_CAP = "<8192 if the model's config.json allows more>"
#: GPUStack's cap: _build_max_model_len_arguments (vLLM) and _build_command_args (SGLang)
CAP_TOKENS = 8192

def _extend_no_exist(arguments: list[str], *pairs: tuple[str, str]) -> None:
    """GPUStack's extend_args_no_exist: add --key value unless --key or --key=... is there."""
    for key, value in pairs:
        if not any(a == key or a.startswith(f"{key}=") for a in arguments):
            arguments.extend([key, value])


def vllm_arguments(ctx: BuiltinContext) -> list[str]:
    p = ctx.parameters
    args = [ctx.model_path]
    if ctx.context_cap and find_parameter(p, "max-model-len") is None:
        args += ["--max-model-len", CONTEXT_CAP]
    if find_parameter(p, "tensor-parallel-size", "tp", "pipeline-parallel-size", "pp", "data-parallel-size", "dp") is None \
            and ctx.gpu_count > 1:
        args += ["--tensor-parallel-size", str(ctx.gpu_count)]
    if compare_versions(ctx.version, "0.16.0") >= 0 and find_parameter(p, "disable-access-log-for-endpoints") is None:
        args += ["--disable-access-log-for-endpoints", "/metrics"]
    if compare_versions(ctx.version, "0.9.0.1") >= 0 and not find_bool_parameter(
            p, "enable-prompt-tokens-details", "no-enable-prompt-tokens-details"):
        args += ["--enable-prompt-tokens-details"]
    if ctx.memory_fraction is not None and find_parameter(p, "gpu-memory-utilization") is None:
        args += ["--gpu-memory-utilization", str(ctx.memory_fraction)]
    args += list(p)
    _extend_no_exist(args, ("--host", ctx.worker_ip), ("--port", str(ctx.port)),
                     ("--served-model-name", ctx.model_name))
    return args


def sglang_arguments(ctx: BuiltinContext) -> list[str]:
    p = ctx.parameters
    args = ["--model-path", ctx.model_path]
    if ctx.context_cap and find_parameter(p, "context-length") is None:
        args += ["--context-length", CONTEXT_CAP]
    if find_parameter(p, "tensor-parallel-size", "tp-size", "pipeline-parallel-size", "pp-size", "data-parallel-size",
             "dp-size") is None and ctx.gpu_count > 1:
        args += ["--tp-size", str(ctx.gpu_count)]
    if find_parameter(p, "enable-metrics") is None and not ctx.env.get("GPUSTACK_DISABLE_METRICS"):
        args += ["--enable-metrics"]
    if compare_versions(ctx.version, "0.5.8.post1") >= 0 and find_parameter(p, "uvicorn-access-log-exclude-prefixes") is None:
        args += ["--uvicorn-access-log-exclude-prefixes", "/metrics"]
    if compare_versions(ctx.version, "0.3.4") >= 0 and not find_bool_parameter(p, "enable-cache-report"):
        args += ["--enable-cache-report"]
    if ctx.memory_fraction is not None and find_parameter(p, "mem-fraction-static") is None:
        args += ["--mem-fraction-static", str(ctx.memory_fraction)]
    args += list(p)
    _extend_no_exist(args, ("--host", ctx.worker_ip), ("--port", str(ctx.port)))
    return args


#: VoxBox's data folder (GPUStack passes its own data_dir; inside the container any writable path does)
VOXBOX_DATA_DIR = "/var/lib/vox-box"


def voxbox_arguments(ctx: BuiltinContext) -> list[str]:
    """VoxBoxServer._build_command_args (gpustack/worker/backends/vox_box.py), after ``vox-box start``.

    GPUStack passes ``--device cuda:<host index>`` to its privileged container; gpufleet's sees only
    the replica's devices, numbered from 0, so ``cuda:<that number>``. Without GPUs: no --device,
    and vox-box runs on the CPU.
    """
    args = ["--model", ctx.model_path, "--data-dir", VOXBOX_DATA_DIR, *ctx.parameters]
    _extend_no_exist(args, ("--host", ctx.worker_ip), ("--port", str(ctx.port)))
    if ctx.gpu_count and ctx.first_device is not None:
        _extend_no_exist(args, ("--device", f"cuda:{ctx.first_device}"))
    return args


#: built-in backends whose command gpufleet builds as GPUStack does (by backend_name)
BUILDERS: dict[str, Callable[[BuiltinContext], list[str]]] = {
    "vLLM": vllm_arguments, "SGLang": sglang_arguments, "VoxBox": voxbox_arguments}
