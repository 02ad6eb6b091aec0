"""Resource fit: ``resources: {vram: auto}`` and ``{gpus: auto}``, sized from the model's metadata as
GPUStack's scheduler sizes it.

Ported rules (gpustack/gpustack@47277d79):

* the weight size is the sum of the repository's root-level ``.safetensors``, ``.bin``, ``.pt`` and
  ``.pth`` files, less ``consolidated.safetensors`` (``utils/hub.py get_model_weight_size``);
* the VRAM claim is ``weight × 1.2 + 2 GiB`` for a model without categories, as every gpufleet
  model is (``policies/utils.py estimate_model_vram``: the 20 % activation overhead of
  transformer-math, 2 GiB of CUDA graphs for LLMs); ``GPUSTACK_MODEL_VRAM_CLAIM`` (bytes) in the
  deployment's env replaces the estimate (``get_vram_claim_from_model_env``);
* a replica takes whole GPUs, each counting 90 % of its size for vLLM (its default
  ``--gpu-memory-utilization``, or the deployment's; ``vllm_resource_fit_selector``) and all of it for
  community and custom backends (``custom_backend_resource_fit_selector``: "without utilization"), as
  few as hold the claim, and a count that divides the model's ``num_attention_heads`` and
  ``vocab_size`` (``base_candidate_selector._is_tp_size_divisible``). For SGLang each GPU counts
  the static memory fraction GPUStack computes for the smallest device of the type
  (stack/sglang_fraction.py: ``MemFractionStaticCalculator``), which is also passed to the engine
  as ``--mem-fraction-static``, as GPUStack passes it. MindIE is sized by GPUStack's own estimate
  (stack/mindie_estimate.py: 3 GiB + weights + KV cache + computation, each NPU counting 80 %);
* a GGUF file (``is_gguf_model``: the file name ends in .gguf, whatever the backend) is sized by
  gguf-parser's full-offload estimate with GPUStack's arguments (stack/gguf_estimate.py): as few
  whole GPUs on one host as hold each GPU's share of weights, KV cache at ``--ctx-size`` (8192 unless
  the deployment says), computation buffers and GPUStack's 500 MiB platform footprint.

The metadata comes from ``stack/<stack>.models.yaml``, committed beside the lock so that a preview
never needs the Hub: ``gpufleet models --stack S`` writes it (the Hub's tree listing for sizes, HTTP
range reads of config.json for the attention heads and of the safetensors or GGUF headers for
parameters and layers; or the files of a local model folder).
Plain data; the placement sees an ordinary whole-GPU demand (``gpus``, ``min_vram``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from pydantic import Field

from documents.fields import PlainText, StrictModel
from documents.problems import InputError
from documents.validation import validate
from documents.yaml_reader import Marks, path_kind, read_yaml
from inventory.fleet import Fleet
from inventory.sizes import format_mib

from .gguf_estimate import CTX_SIZE, LOGICAL_BATCH, PARALLEL, PHYSICAL_BATCH, Options, vram_per_gpu
from .mindie_estimate import npu_fraction, vram_request
from .placement.filters import model_matches
from .sglang_fraction import mem_fraction_static
from .schema import Deployment, ModelSource

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
EXCLUDED = ("consolidated.safetensors",)
ACTIVATION_OVERHEAD = 1.2
LLM_FRAMEWORK_OVERHEAD = 2 * 1024 ** 3
GPU_MEMORY_UTILIZATION = 0.9
MIB = 1024 ** 2


class LayerTensor(StrictModel):
    name: PlainText
    dims: list[int] = Field(min_length=1, max_length=4)
    bytes: int = Field(ge=0)


class GGUFFacts(StrictModel):
    """What gguf-parser's estimate needs of a GGUF header (stack.gguf_estimate.facts)."""

    architecture: PlainText
    block_count: int = Field(ge=1)
    embedding_length: int = Field(ge=1)
    vocab_length: int = Field(ge=0)
    context_length: int = Field(ge=0)
    head_count: int = Field(ge=1)
    head_count_kv: int = Field(ge=0)
    key_length: int = Field(ge=0)
    value_length: int = Field(ge=0)
    causal: bool = True
    weight_bytes: int = Field(ge=0)
    parameters: int = Field(ge=0)
    #: bytes of each transformer layer (and lone tensor) in file order
    layer_bytes: list[int]
    output_bytes: int = Field(ge=0)
    output_rows: int = Field(ge=0)
    last_layer: list[LayerTensor]


class TextFacts(StrictModel):
    """The language model's hyperparameters from config.json (its text_config for a multimodal one), as
    GPUStack's ModelParameters reads them, for MindIE's estimate (stack.mindie_estimate)."""

    num_hidden_layers: Optional[int] = Field(default=None, ge=0)
    num_attention_heads: Optional[int] = Field(default=None, ge=0)
    num_key_value_heads: Optional[int] = Field(default=None, ge=0)
    head_dim: Optional[int] = Field(default=None, ge=0)
    q_lora_rank: Optional[int] = Field(default=None, ge=0)
    kv_lora_rank: Optional[int] = Field(default=None, ge=0)
    qk_nope_head_dim: Optional[int] = Field(default=None, ge=0)
    torch_dtype: Optional[PlainText] = None
    quantize: Optional[PlainText] = None
    kv_quant_type: Optional[PlainText] = None
    #: GPUStack's derived_max_seq_len (get_max_model_len)
    max_len: Optional[int] = Field(default=None, ge=0)


class ModelMeta(StrictModel):
    """What resource fit needs of one model."""

    weight_bytes: int = Field(ge=0)
    num_attention_heads: Optional[int] = Field(default=None, ge=1)
    vocab_size: Optional[int] = Field(default=None, ge=1)
    #: the vision tower's layers and hidden size (config.json's vision_config), for SGLang's fraction
    vision_layers: Optional[int] = Field(default=None, ge=1)
    vision_hidden_size: Optional[int] = Field(default=None, ge=1)
    #: parameters per dtype, from the safetensors headers
    parameters: Optional[dict[str, int]] = None
    #: the language model's hyperparameters, for MindIE's estimate
    text: Optional[TextFacts] = None
    #: the GGUF file's facts, for gguf-parser's estimate
    gguf: Optional[GGUFFacts] = None
    #: where the figures were read (a URL or a folder), for people
    source: PlainText = ""


class ModelsFile(StrictModel):
    models: dict[str, ModelMeta] = Field(default_factory=dict)


def models_path(stack_file: Path) -> Path:
    return stack_file.with_name(f"{stack_file.stem}.models.yaml")


def model_key(source: ModelSource) -> str:
    return f"{source.kind}:{source.ref}" + (f":{source.filename}" if source.filename else "")


def read_models(path: Path, shown: str) -> dict[str, ModelMeta]:
    if path_kind(path) == "missing":
        return {}
    data, marks = read_yaml(path, shown)
    if data is None:
        return {}
    return validate(ModelsFile, data, marks).models


def weight_bytes(files: dict[str, int]) -> int:
    """``get_model_weight_size``: root-level weight files only."""
    return sum(size for name, size in files.items()
               if "/" not in name and name.endswith(WEIGHT_SUFFIXES) and name not in EXCLUDED)


def claim_mib(meta: ModelMeta, env: dict[str, str]) -> int:
    override = env.get("GPUSTACK_MODEL_VRAM_CLAIM", "")
    if override.isdigit():
        return math.ceil(int(override) / MIB)
    return math.ceil((int(meta.weight_bytes * ACTIVATION_OVERHEAD) + LLM_FRAMEWORK_OVERHEAD) / MIB)


def divides(n: int, meta: ModelMeta) -> bool:
    return all(v is None or v % n == 0 for v in (meta.num_attention_heads, meta.vocab_size))


@dataclass(frozen=True)
class Fit:
    weight_bytes: int
    claim_mib: int
    gpus: int
    min_vram_mib: int
    utilization: float = GPU_MEMORY_UTILIZATION
    #: for a GGUF file: how gguf-parser's estimate was made (context size and per-GPU VRAM)
    gguf_note: str = ""
    #: SGLang: the static memory fraction GPUStack computed, passed to the engine as it passes it
    engine_fraction: Optional[float] = None
    #: sized by GPUStack's MindIE estimate
    mindie: bool = False

    def describe(self) -> str:
        if self.gguf_note:
            return (f"{self.weight_bytes / 1024 ** 3:.1f} GiB of GGUF weights → {self.gpus} × GPU of at least "
                    f"{format_mib(self.min_vram_mib)} ({self.gguf_note})")
        if self.mindie:
            return (f"{self.weight_bytes / 1024 ** 3:.1f} GiB of weights → {format_mib(self.claim_mib)} of NPU memory "
                    f"(GPUStack's MindIE estimate: 3 GiB + weights + KV cache + computation) → {self.gpus} × NPU of "
                    f"at least {format_mib(self.min_vram_mib)} ({self.utilization:.0%} usable)")
        usable = f"{self.utilization:.1%}" if self.engine_fraction else f"{self.utilization:.0%}"
        how = ", SGLang's static memory fraction as GPUStack computes it" if self.engine_fraction else ""
        return (f"{self.weight_bytes / 1024 ** 3:.1f} GiB of weights → {format_mib(self.claim_mib)} of VRAM "
                f"(× 1.2 + 2 GiB) → {self.gpus} × GPU of at least {format_mib(self.min_vram_mib)} "
                f"({usable} usable{how})")


def per_gpu(claim: int, n: int, utilization: float = GPU_MEMORY_UTILIZATION) -> int:
    return math.ceil(claim / (n * utilization))


def is_gguf(source: ModelSource) -> bool:
    """GPUStack's is_gguf_model: the file (or local path) ends in .gguf; gguf-parser sizes it."""
    return (source.filename or source.ref).endswith(".gguf")


def gguf_options(parameters: list[str]) -> Options:
    """GPUStack's gguf-parser arguments from the deployment's own (GGUFParserCommandMutableParameters)."""
    from backends.parameters import find_bool_parameter, find_parameter

    def number(default: int, *names: str) -> int:
        given = find_parameter(parameters, *names)
        return int(given) if given and given.isdigit() and int(given) > 0 else default

    return Options(ctx_size=number(CTX_SIZE, "ctx-size", "c"), parallel=number(PARALLEL, "parallel", "parallel-size", "np"),
                   ubatch=number(PHYSICAL_BATCH, "ubatch-size", "ub"), batch=number(LOGICAL_BATCH, "batch-size", "b"),
                   flash_attention=find_bool_parameter(parameters, "flash-attn", "fa", "flash-attention"))


def utilization(backend: str, builtin: bool, parameters: list[str]) -> float:
    """The share of each GPU the claim may use, as GPUStack's selector for this backend counts it."""
    if backend == "vLLM" and builtin:
        from backends.parameters import find_parameter

        given = find_parameter(parameters, "gpu-memory-utilization")
        try:
            return float(given) if given else GPU_MEMORY_UTILIZATION
        except ValueError:
            return GPU_MEMORY_UTILIZATION
    return 1.0  # custom_backend_resource_fit_selector: the claim against the device's VRAM


def fit(name: str, dep: Deployment, framework: str, fleet: Fleet, models: dict[str, ModelMeta],
        models_file: str, marks: Marks, backend: str = "vLLM", builtin: bool = True,
        parameters: list[str] | None = None) -> Fit:
    """The GPU count and smallest device size GPUStack's rules give this deployment, on this fleet."""
    at = ("deployments", name, "resources")
    if is_gguf(dep.model):
        return _gguf_fit(name, dep, framework, fleet, models, models_file, marks, parameters or [])
    if backend == "llama.cpp":
        raise InputError([marks.problem(at, "auto sizes llama.cpp from the GGUF file's header (gguf-parser's "
                                            "estimate, as GPUStack does); name the file: huggingface_filename: "
                                            "'*Q4_K_M*.gguf' or a local_path ending in .gguf")])
    if backend == "MindIE" and builtin:
        return _mindie_fit(name, dep, framework, fleet, models, models_file, marks)
    share = utilization(backend, builtin, parameters or [])
    meta = _meta(name, dep, models, models_file, marks)
    claim = claim_mib(meta, dep.env)
    groups = _groups(dep, framework, fleet)
    engine = None
    if backend == "SGLang" and builtin and groups:
        # GPUStack: one fraction per GPU type, from the smallest device of the type it may use
        vision = (meta.vision_layers, meta.vision_hidden_size or 1024) if meta.vision_layers else None
        engine = mem_fraction_static(min(size for size, _ in groups), framework == "cann", parameters or [], vision)
        share = engine if engine is not None else _given_fraction(parameters or [])
    found = _fewest(dep, groups, meta, lambda n: per_gpu(claim, n, share))
    if found:
        return Fit(meta.weight_bytes, claim, found[0], found[1], share, engine_fraction=engine)
    fixed = dep.resources.gpus if dep.resources.gpus != "auto" else None
    most = max((n for _, n in groups), default=0)
    largest = max((size for size, _ in groups), default=0)
    how = f"{fixed} GPUs" if fixed else "any GPU count that divides its attention heads"
    raise InputError([marks.problem(at, f"{model_key(dep.model)} needs about {format_mib(claim)} of VRAM "
                                        f"(weights × 1.2 + 2 GiB); with {how} no host has enough {framework} "
                                        f"devices of that size (largest: {format_mib(largest)}, most on one "
                                        f"host: {most}); give gpus and vram yourself or add bigger hosts")])


def _mindie_fit(name: str, dep: Deployment, framework: str, fleet: Fleet, models: dict[str, ModelMeta],
                models_file: str, marks: Marks) -> Fit:
    """GPUStack's MindIE estimate: the fewest NPUs whose npu_memory_fraction shares hold it and divide
    the attention heads."""
    at = ("deployments", name, "resources")
    meta = _meta(name, dep, models, models_file, marks)
    stack = Path(models_file).name.removesuffix(".models.yaml")
    if meta.text is None or not meta.text.num_hidden_layers:
        raise InputError([marks.problem(at, f"{models_file} has no config.json facts for {model_key(dep.model)}; "
                                            f"run: gpufleet models --stack {stack} --refresh, or give gpus and vram")])
    if meta.vision_layers:
        raise InputError([marks.problem(at, f"{model_key(dep.model)} is multimodal: GPUStack sizes multimodal MindIE "
                                            "models from their prefill tokens and architecture list, which gpufleet "
                                            "does not port; give gpus and vram instead of auto")])
    request = vram_request(meta.text, meta.weight_bytes, dep.env)
    share = npu_fraction(dep.env)
    claim = math.ceil(request / MIB)
    groups = _groups(dep, framework, fleet)
    found = _fewest(dep, groups, meta, lambda n: per_gpu(claim, n, share))
    if found:
        return Fit(meta.weight_bytes, claim, found[0], found[1], share, mindie=True)
    most = max((n for _, n in groups), default=0)
    largest = max((size for size, _ in groups), default=0)
    raise InputError([marks.problem(at, f"{model_key(dep.model)} needs about {format_mib(claim)} of NPU memory "
                                        "(GPUStack's MindIE estimate: 3 GiB + weights + KV cache + computation); "
                                        f"no host has enough {framework} devices of that size at "
                                        f"{share:.0%} each (largest: {format_mib(largest)}, most on one host: "
                                        f"{most}); give gpus and vram yourself or add bigger hosts")])


def _fewest(dep: Deployment, groups: list[tuple[int, int]], meta: ModelMeta | None, need_for) -> tuple[int, int] | None:
    """The fewest GPUs (the deployment's own count, if it gives one) on one host whose devices hold
    ``need_for(n)`` MiB each: (count, MiB per device), or None. ``meta``: counts must divide its heads."""
    fixed = dep.resources.gpus if dep.resources.gpus != "auto" else None
    most = max((n for _, n in groups), default=0)
    counts = [fixed] if fixed else [n for n in range(1, most + 1) if meta is None or divides(n, meta)]
    for n in counts:
        need = need_for(n)
        if any(size >= need and count >= n for size, count in groups):
            return n, need
    return None


def _given_fraction(parameters: list[str]) -> float:
    from backends.parameters import find_parameter

    try:
        return float(find_parameter(parameters, "mem-fraction-static"))
    except (TypeError, ValueError):
        return GPU_MEMORY_UTILIZATION


def _meta(name: str, dep: Deployment, models: dict[str, ModelMeta], models_file: str, marks: Marks) -> ModelMeta:
    meta = models.get(model_key(dep.model))
    if meta is None:
        stack = Path(models_file).name.removesuffix(".models.yaml")
        raise InputError([marks.problem(("deployments", name, "resources"),
                                        f"resources say auto, but {models_file} has no size for "
                                        f"{model_key(dep.model)}; run: gpufleet models --stack {stack} "
                                        "(and commit the file), or give gpus and vram")])
    return meta


def _groups(dep: Deployment, framework: str, fleet: Fleet) -> list[tuple[int, int]]:
    """(device size in MiB, devices on the host) of every device group the deployment may use."""
    sel = dep.selectors
    return [(g.vram_mib, len(g.devices)) for h in fleet.hosts if h.active for g in h.groups
            if g.framework == framework and (sel.vendor is None or g.vendor == sel.vendor)
            and (sel.gpu_model is None or model_matches(sel.gpu_model, g.model))]


def _gguf_fit(name: str, dep: Deployment, framework: str, fleet: Fleet, models: dict[str, ModelMeta],
              models_file: str, marks: Marks, parameters: list[str]) -> Fit:
    """gguf-parser's full-offload estimate: the fewest equal GPUs on one host whose largest share fits."""
    at = ("deployments", name, "resources")
    meta = _meta(name, dep, models, models_file, marks)
    if meta.gguf is None:
        stack = Path(models_file).name.removesuffix(".models.yaml")
        raise InputError([marks.problem(at, f"{models_file} has no GGUF header facts for {model_key(dep.model)}; "
                                            f"run: gpufleet models --stack {stack} --refresh")])
    opts = gguf_options(parameters)
    if find_ctx(parameters) == "0":  # llama.cpp: the model's own context length
        opts = replace(opts, ctx_size=meta.gguf.context_length or CTX_SIZE)
    facts = meta.gguf.model_dump()
    groups = _groups(dep, framework, fleet)
    ctx = f"--ctx-size {opts.ctx_size}" + ("" if find_ctx(parameters) else " (GPUStack's default; pass --ctx-size "
                                                                            "so llama-server uses the same)")
    found = _fewest(dep, groups, None, lambda n: math.ceil(max(vram_per_gpu(facts, [1] * n, opts)) / MIB))
    if found:
        n, need = found
        return Fit(meta.weight_bytes, need * n, n, need, 1.0, gguf_note=f"gguf-parser's estimate at {ctx}")
    fixed = dep.resources.gpus if dep.resources.gpus != "auto" else None
    most = max((n for _, n in groups), default=0)
    one = math.ceil(max(vram_per_gpu(facts, [1], opts)) / MIB)
    largest = max((size for size, _ in groups), default=0)
    how = f"{fixed} GPUs" if fixed else "any GPU count"
    raise InputError([marks.problem(at, f"{model_key(dep.model)} needs about {format_mib(one)} of VRAM on one GPU "
                                        f"(gguf-parser's estimate at --ctx-size {opts.ctx_size}); with {how} no host "
                                        f"has enough {framework} devices (largest: {format_mib(largest)}, most on "
                                        f"one host: {most}); lower --ctx-size, give gpus and vram yourself or add "
                                        "bigger hosts")])


def find_ctx(parameters: list[str]) -> str | None:
    """The deployment's own --ctx-size/-c, if it gives one."""
    from backends.parameters import find_parameter

    return find_parameter(parameters, "ctx-size", "c")
