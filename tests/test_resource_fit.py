"""`auto` resources: sized from the model's metadata by GPUStack's rules (stack/resource_fit.py)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from stack.resource_fit import ModelMeta, claim_mib, weight_bytes

from .conftest import copy_project, run_cli
from .hub_server import HubServer, Repo
from .test_plan_cli import edit

GIB = 1024 ** 3


@pytest.mark.parametrize("weights, gib", [
    # estimate_model_vram's docstring: "using bfloat16, 0.5B requires 3.1 GiB, 3B requires 8.9 GiB,
    # 7B requires 19.0 GiB, 72B requires 164.5 GiB"; the weights are the published sizes of
    # Qwen2.5-{0.5B,3B,7B,72B}-Instruct's safetensors (0.99, 6.17, 15.23, 145.41 GB)
    (0.988e9, 3.1), (6.17e9, 8.9), (15.23e9, 19.0), (145.41e9, 164.5)])
def test_the_vram_claim_is_gpustacks(weights, gib):
    assert round(claim_mib(ModelMeta(weight_bytes=int(weights)), {}) / 1024, 1) == gib


def test_weights_are_the_root_level_weight_files_less_consolidated():
    files = {"model-00001-of-00002.safetensors": 5, "model-00002-of-00002.safetensors": 7, "consolidated.safetensors": 12,
             "pytorch_model.bin": 100, "original/consolidated.00.pth": 1000, "tokenizer.json": 3, "config.json": 1}
    assert weight_bytes(files) == 112
    assert claim_mib(ModelMeta(weight_bytes=10 * GIB), {"GPUSTACK_MODEL_VRAM_CLAIM": str(30 * GIB)}) == 30 * 1024


QWEN_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "num_attention_heads": 28, "num_key_value_heads": 4,
               "vocab_size": 152064, "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}


def _shard(size: int) -> bytes:
    """A safetensors header (128 bytes) whose one BF16 tensor fills a file of ``size`` bytes."""
    n = (size - 8 - 128) // 2
    body = json.dumps({"w": {"dtype": "BF16", "shape": [n], "data_offsets": [0, 2 * n]}}).encode()
    return struct.pack("<Q", 128) + body.ljust(128)


@pytest.fixture
def hub():
    shards = {f"model-0000{i}-of-00004.safetensors": _shard(3_807_808_256) for i in range(1, 5)}
    repos = {"Qwen/Qwen2.5-7B-Instruct": Repo(
        {"config.json": json.dumps(QWEN_CONFIG).encode(), "consolidated.safetensors": b"c", **shards,
         "tokenizer.json": b"{}"},
        sizes={**{n: 3_807_808_256 for n in shards}, "consolidated.safetensors": 15_231_233_024})}
    with HubServer(repos) as server:
        yield server


def _auto_project(tmp_path, resources: str):
    project = copy_project(tmp_path)
    edit(project / "stack" / "demo.yaml", "deployments:", "deployments:\n  qwen-auto:\n    backend: vLLM\n"
         f"    model: {{huggingface: Qwen/Qwen2.5-7B-Instruct}}\n    resources: {resources}\n")
    return project


def test_models_records_sizes_from_the_hub_without_downloading_weights(tmp_path, hub, monkeypatch):
    project = _auto_project(tmp_path, "{gpus: auto}")
    r = run_cli("--root", project, "plan", "--stack", "demo")
    assert r.code == 2
    assert ("stack/demo.yaml:12:16: deployments.qwen-auto.resources: resources say auto, but stack/demo.models.yaml "
            "has no size for huggingface:Qwen/Qwen2.5-7B-Instruct; run: gpufleet models --stack demo (and commit "
            "the file), or give gpus and vram") in r.err, r.err
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    r = run_cli("--root", project, "models", "--stack", "demo")
    assert r.code == 0, r.err
    models = yaml.safe_load((project / "stack" / "demo.models.yaml").read_text())["models"]
    meta = models["huggingface:Qwen/Qwen2.5-7B-Instruct"]
    assert meta["weight_bytes"] == 4 * 3_807_808_256  # consolidated.safetensors left out, as GPUStack does
    assert (meta["num_attention_heads"], meta["vocab_size"]) == (28, 152064)
    assert hub.downloads() == 0 and hub.requests[("RANGE", "/Qwen/Qwen2.5-7B-Instruct/resolve/main/config.json")]
    assert meta["parameters"] == {"BF16": 4 * (3_807_808_256 - 8 - 128) // 2}  # the shards' headers
    # now the plan sizes it: 15.2 GB of weights -> 19.0 GiB -> one GPU of at least 21.2 GiB
    assert run_cli("--root", project, "lock", "--stack", "demo").code == 0
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    (fit,) = data["resource_fit"]
    assert fit["gpus"] == 1 and round(fit["vram_claim_mib"] / 1024, 1) == 19.0
    (rep,) = [x for x in data["replicas"] if x["deployment"] == "qwen-auto"]
    assert rep["whole"] and len(rep["gpus"]) == 1 and rep["vram_per_gpu_mib"] >= fit["min_vram_mib"]
    r = run_cli("--root", project, "plan", "--stack", "demo")
    assert ("resource fit: 14.2 GiB of weights → 19.0 GiB of VRAM (× 1.2 + 2 GiB) → 1 × GPU of at least 21.1 GiB "
            "(90% usable)") in r.err, r.err


def test_gpu_count_grows_until_the_model_fits_and_divides_its_heads(tmp_path):
    project = _auto_project(tmp_path, "{gpus: auto}")
    (project / "stack" / "demo.models.yaml").write_text(yaml.safe_dump({"models": {
        "huggingface:Qwen/Qwen2.5-7B-Instruct": {"weight_bytes": 145_410_000_000, "num_attention_heads": 64,
                                                  "vocab_size": 152064}}}))
    edit(project / "stack" / "demo.yaml", "resources: {gpus: auto}", "resources: {gpus: auto}\n"
         "    selectors: {vendor: nvidia}")
    run_cli("--root", project, "lock", "--stack", "demo")
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    (fit,) = data["resource_fit"]
    # 164.5 GiB: 1 × 80 GiB no, 2 × 80 GiB (0.9 each) no, 4 × 80 GiB yes (64 heads divide by 4)
    assert fit["gpus"] == 4 and fit["min_vram_mib"] == -(-fit["vram_claim_mib"] * 10 // 36)
    (rep,) = [x for x in data["replicas"] if x["deployment"] == "qwen-auto"]
    assert rep["host"] == "nv-h100-1" and len(rep["gpus"]) == 4


def test_a_model_no_host_can_hold_says_how_big_it_is(tmp_path):
    project = _auto_project(tmp_path, "{gpus: 1, vram: auto}")
    (project / "stack" / "demo.models.yaml").write_text(yaml.safe_dump({"models": {
        "huggingface:Qwen/Qwen2.5-7B-Instruct": {"weight_bytes": 400 * GIB}}}))
    r = run_cli("--root", project, "plan", "--stack", "demo")
    assert r.code == 2
    assert ("huggingface:Qwen/Qwen2.5-7B-Instruct needs about 482 GiB of VRAM (weights × 1.2 + 2 GiB); with 1 GPUs no "
            "host has enough cuda devices of that size") in r.err, r.err


def test_llama_cpp_with_a_whole_repository_is_noted(tmp_path):
    project = copy_project(tmp_path)
    edit(project / "stack" / "demo.yaml", "model: {local_path: /srv/models/qwen2.5-7b-instruct-q4_k_m.gguf}",
         "model: {huggingface: Qwen/Qwen2.5-7B-Instruct-GGUF}")
    r = run_cli("--root", project, "validate")
    assert ("deployments.gguf-rocm.model: llama.cpp loads one GGUF file, but the whole repository "
            "Qwen/Qwen2.5-7B-Instruct-GGUF will be fetched and its folder passed as -m; name the file with "
            "huggingface_filename, e.g. '*Q4_K_M*.gguf'") in r.err, r.err


@pytest.mark.parametrize("backend, version, why", [
    ("llama.cpp", "\n    version: cuda", "auto sizes llama.cpp from the GGUF file's header (gguf-parser's "
                                          "estimate, as GPUStack does); name the file")])
def test_auto_is_refused_where_it_cannot_be_sized(tmp_path, backend, version, why):
    project = copy_project(tmp_path)
    edit(project / "stack" / "demo.yaml", "deployments:", f"deployments:\n  x:\n    backend: {backend}{version}\n"
         "    model: {huggingface: o/m}\n    resources: {gpus: auto}\n")
    r = run_cli("--root", project, "validate")
    assert r.code == 2 and why in r.err, r.err


def test_community_backends_count_the_whole_device(tmp_path):
    project = copy_project(tmp_path)
    edit(project / "stack" / "demo.yaml", "deployments:", "deployments:\n  tei:\n    backend: Text-Embeddings-Inference\n"
         "    version: CUDA-Ampere-sm80-1.9\n    model: {huggingface: BAAI/bge-m3}\n    resources: {vram: auto}\n")
    (project / "stack" / "demo.models.yaml").write_text(yaml.safe_dump({"models": {
        "huggingface:BAAI/bge-m3": {"weight_bytes": 2_271_064_456}}}))
    run_cli("--root", project, "lock", "--stack", "demo")
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    (fit,) = data["resource_fit"]
    assert fit["gpus"] == 1 and fit["min_vram_mib"] == fit["vram_claim_mib"]  # no 90 %: the custom selector's rule


SGLANG_GOLDEN = json.loads((Path(__file__).parent / "data" / "gpustack" / "sglang_mem_fraction.json").read_text())


@pytest.mark.parametrize("case", SGLANG_GOLDEN["cases"], ids=lambda c: f"{c['device_mib']}-{c['framework']}-"
                         f"{' '.join(c['backend_parameters'])}-{bool(c['vision_config'])}")
def test_sglangs_static_memory_fraction_is_gpustacks(case):
    from stack.sglang_fraction import mem_fraction_static

    v = case["vision_config"]
    vision = None if v is None else (v.get("num_hidden_layers") or v.get("depth") or 24, v.get("hidden_size", 1024))
    assert mem_fraction_static(min(case["device_mib"]), case["framework"] == "cann", case["backend_parameters"],
                               vision) == case["mem_fraction_static"]


@pytest.mark.parametrize("selector", ["'*A100*'", "['*A100*', '*H100*']"])  # a list: the smallest it allows
def test_sglang_auto_counts_gpustacks_fraction_and_passes_it_to_the_engine(tmp_path, selector):
    from stack.plan import build_plan
    from stack.project import load_project

    project = copy_project(tmp_path)
    edit(project / "stack" / "demo.yaml", "deployments:", "deployments:\n  sg:\n    backend: SGLang\n"
         "    model: {huggingface: Qwen/Qwen2.5-VL-7B-Instruct}\n    resources: {gpus: auto}\n"
         f"    selectors: {{gpu_model: {selector}}}\n")
    (project / "stack" / "demo.models.yaml").write_text(yaml.safe_dump({"models": {
        "huggingface:Qwen/Qwen2.5-VL-7B-Instruct": {"weight_bytes": 16_582_831_184, "num_attention_heads": 28,
                                                    "vocab_size": 152064, "vision_layers": 32,
                                                    "vision_hidden_size": 1280}}}))
    assert run_cli("--root", project, "lock", "--stack", "demo").code == 0
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    (fit,) = [f for f in data["resource_fit"] if f["deployment"] == "sg"]
    # GPUStack on a 40 GiB A100 (the smallest device the selector allows), with a 32 × 1280 vision tower:
    # 0.833 × 0.95 × 0.892 = 0.706; 15.4 GiB of weights -> 20.5 GiB of VRAM -> one GPU of at least 29.1 GiB
    assert (fit["gpus"], fit["min_vram_mib"]) == (1, -(-21026 * 1000 // 706))
    assert "70.6% usable, SGLang's static memory fraction as GPUStack computes it" in fit["estimate"], fit
    plan = build_plan(load_project("demo", project))
    (c,) = [c for c in plan.containers if c.deployment == "sg"]
    i = c.command.index("--mem-fraction-static")
    assert c.command[i + 1] == "0.706"


MINDIE_GOLDEN = json.loads((Path(__file__).parent / "data" / "gpustack" / "mindie_estimate.json").read_text())


@pytest.mark.parametrize("case", MINDIE_GOLDEN["cases"], ids=lambda c: c["name"])
def test_mindies_estimate_is_gpustacks(case):
    from stack.mindie_estimate import vram_request
    from stack.model_metadata import _config_fields
    from stack.resource_fit import TextFacts

    facts = TextFacts(**_config_fields(case["config"])["text"])  # as gpufleet models records config.json
    assert vram_request(facts, case["weight_bytes"], case["env"]) == case["vram"]


def _mindie_project(tmp_path, meta: dict):
    project = copy_project(tmp_path)
    edit(project / "stack" / "demo.yaml", "deployments:", "deployments:\n  mi:\n    backend: MindIE\n"
         "    model: {huggingface: Qwen/Qwen2.5-7B-Instruct}\n    resources: {gpus: auto}\n")
    (project / "stack" / "demo.models.yaml").write_text(yaml.safe_dump({"models": {
        "huggingface:Qwen/Qwen2.5-7B-Instruct": meta}}))
    return project


def test_mindie_auto_takes_the_npus_gpustacks_estimate_asks(tmp_path):
    from stack.model_metadata import _config_fields

    config = MINDIE_GOLDEN["cases"][0]["config"]  # Qwen2.5-7B-Instruct: 20,390,226,944 bytes by GPUStack
    project = _mindie_project(tmp_path, {"weight_bytes": 15_231_233_024, **_config_fields(config)})
    assert run_cli("--root", project, "lock", "--stack", "demo").code == 0
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    (fit,) = [f for f in data["resource_fit"] if f["deployment"] == "mi"]
    need = -(-20_390_226_944 // 1024 ** 2)
    assert (fit["gpus"], fit["vram_claim_mib"], fit["min_vram_mib"]) == (1, need, -(-need * 10 // 8))
    assert "GPUStack's MindIE estimate: 3 GiB + weights + KV cache + computation" in fit["estimate"]
    (rep,) = [r for r in data["replicas"] if r["deployment"] == "mi"]
    assert rep["host"] == "ascend-910b-1" and len(rep["gpus"]) == 1


def test_mindie_auto_refuses_a_multimodal_model_with_the_reason(tmp_path):
    project = _mindie_project(tmp_path, {"weight_bytes": 16 * 1024 ** 3, "vision_layers": 32,
                                         "vision_hidden_size": 1280, "text": {"num_hidden_layers": 28}})
    r = run_cli("--root", project, "validate")
    assert r.code == 2 and "is multimodal: GPUStack sizes multimodal MindIE models from their prefill tokens" \
        in r.err, r.err


def test_validate_reads_the_models_file_as_the_stacks_not_as_a_stack(tmp_path):
    project = _auto_project(tmp_path, "{gpus: auto}")
    (project / "stack" / "demo.models.yaml").write_text(yaml.safe_dump({"models": {
        "huggingface:Qwen/Qwen2.5-7B-Instruct": {"weight_bytes": 15_231_233_024, "num_attention_heads": 28}}}))
    r = run_cli("--root", project, "validate")
    assert r.code == 0 and "demo.models.yaml" not in r.err, r.err
