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
  ``vocab_size`` (``base_candidate_selector._is_tp_size_divisible``). SGLang (a memory fraction
  GPUStack derives per GPU type), MindIE (``npu_memory_fraction``) and GGUF models (gguf-parser's
  estimate) are sized differently by GPUStack and not ported: ``auto`` is refused for them.

The metadata comes from ``stack/<stack>.models.yaml``, committed beside the lock so that a preview
never needs the Hub: ``gpufleet models --stack S`` writes it (the Hub's tree listing for sizes, an
HTTP range read of config.json for the attention heads; or the files of a local model folder).
Plain data; the placement sees an ordinary whole-GPU demand (``gpus``, ``min_vram``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import Field

from documents.fields import PlainText, StrictModel
from documents.problems import InputError
from documents.validation import validate
from documents.yaml_reader import Marks, path_kind, read_yaml
from inventory.fleet import Fleet
from inventory.sizes import format_mib

from .placement.filters import model_matches
from .schema import Deployment, ModelSource

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
EXCLUDED = ("consolidated.safetensors",)
ACTIVATION_OVERHEAD = 1.2
LLM_FRAMEWORK_OVERHEAD = 2 * 1024 ** 3
GPU_MEMORY_UTILIZATION = 0.9
MIB = 1024 ** 2


class ModelMeta(StrictModel):
    """What resource fit needs of one model."""

    weight_bytes: int = Field(ge=0)
    num_attention_heads: Optional[int] = Field(default=None, ge=1)
    vocab_size: Optional[int] = Field(default=None, ge=1)
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

    def describe(self) -> str:
        return (f"{self.weight_bytes / 1024 ** 3:.1f} GiB of weights → {format_mib(self.claim_mib)} of VRAM "
                f"(× 1.2 + 2 GiB) → {self.gpus} × GPU of at least {format_mib(self.min_vram_mib)} "
                f"({self.utilization:.0%} usable)")


def per_gpu(claim: int, n: int, utilization: float = GPU_MEMORY_UTILIZATION) -> int:
    return math.ceil(claim / (n * utilization))


#: built-ins GPUStack sizes another way (not ported)
NOT_PORTED = {"SGLang": "a static memory fraction GPUStack derives per GPU type",
              "MindIE": "its npu_memory_fraction and MindIE's own parameters",
              "llama.cpp": "gguf-parser's estimate of the GGUF file"}


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
    why = NOT_PORTED.get(backend)
    if why is not None:
        raise InputError([marks.problem(at, f"GPUStack sizes {backend} with {why}, which gpufleet does not port; "
                                            "give gpus and vram instead of auto")])
    share = utilization(backend, builtin, parameters or [])
    meta = models.get(model_key(dep.model))
    if meta is None:
        stack = Path(models_file).name.removesuffix(".models.yaml")
        raise InputError([marks.problem(at, f"resources say auto, but {models_file} has no size for "
                                            f"{model_key(dep.model)}; run: gpufleet models --stack {stack} "
                                            "(and commit the file), or give gpus and vram")])
    claim = claim_mib(meta, dep.env)
    sel = dep.selectors
    groups = [(g.vram_mib, len(g.devices)) for h in fleet.hosts if h.active for g in h.groups
              if g.framework == framework and (sel.vendor is None or g.vendor == sel.vendor)
              and (sel.gpu_model is None or model_matches(sel.gpu_model, g.model))]
    fixed = dep.resources.gpus if dep.resources.gpus != "auto" else None
    most = max((n for _, n in groups), default=0)
    counts = [fixed] if fixed else [n for n in range(1, most + 1) if divides(n, meta)]
    for n in counts:
        need = per_gpu(claim, n, share)
        if any(size >= need and count >= n for size, count in groups):
            return Fit(meta.weight_bytes, claim, n, need, share)
    largest = max((size for size, _ in groups), default=0)
    how = f"{fixed} GPUs" if fixed else "any GPU count that divides its attention heads"
    raise InputError([marks.problem(at, f"{model_key(dep.model)} needs about {format_mib(claim)} of VRAM "
                                        f"(weights × 1.2 + 2 GiB); with {how} no host has enough {framework} "
                                        f"devices of that size (largest: {format_mib(largest)}, most on one "
                                        f"host: {most}); give gpus and vram yourself or add bigger hosts")])

