"""Record GPUStack's MindIE VRAM estimate, for tests/test_resource_fit.py to hold the port to.

    python -m tests.mindie_golden /work/.mirror/gpustack+gpustack/repo > tests/data/gpustack/mindie_estimate.json

Runs GPUStack's own ``AscendMindIEResourceFitSelector._estimate_usage`` and
``ModelParameters.get_attention_type`` from a git checkout of gpustack/gpustack, executed as they
are. Stand-ins: the model (its env and source), the weight size lookup (returns the case's weights),
and the parsed serving parameters and model parameters, which hold MindIE's defaults and the
case's config.json values the way ``AscendMindIEParameters`` and ``ModelParameters`` set them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

SELECTOR = "gpustack/policies/candidate_selectors/ascend_mindie_resource_fit_selector.py"
BASE = "gpustack/policies/candidate_selectors/base_candidate_selector.py"
GIB = 1024 ** 3

CASES = [  # (name, config.json's text part, weights in bytes, env)
    ("Qwen2.5-7B-Instruct (GQA, bf16)", {"num_hidden_layers": 28, "hidden_size": 3584, "num_attention_heads": 28,
                                         "num_key_value_heads": 4, "torch_dtype": "bfloat16",
                                         "max_position_embeddings": 32768}, 15_231_233_024, {}),
    ("Llama-2-7b (MHA, fp16, 4096)", {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
                                      "num_key_value_heads": 32, "torch_dtype": "float16",
                                      "max_position_embeddings": 4096}, 13_476_839_424, {}),
    ("a config without num_key_value_heads (MQA by GPUStack's default)",
     {"num_hidden_layers": 24, "hidden_size": 2048, "num_attention_heads": 16, "torch_dtype": "float32",
      "max_position_embeddings": 2048}, 5 * GIB, {}),
    ("DeepSeek-V2-Lite (MLA)", {"num_hidden_layers": 27, "hidden_size": 2048, "num_attention_heads": 16,
                                "num_key_value_heads": 16, "q_lora_rank": 1536, "kv_lora_rank": 512,
                                "qk_nope_head_dim": 128, "torch_dtype": "bfloat16",
                                "max_position_embeddings": 163840}, 31_410_000_000, {}),
    ("w8a8 with c8 KV cache", {"num_hidden_layers": 28, "hidden_size": 3584, "num_attention_heads": 28,
                               "num_key_value_heads": 4, "torch_dtype": "bfloat16", "quantize": "w8a8",
                               "quantization_config": {"kv_quant_type": "C8"},
                               "max_position_embeddings": 32768}, 8_100_000_000, {}),
    ("head_dim given", {"num_hidden_layers": 36, "hidden_size": 4096, "num_attention_heads": 32, "head_dim": 128,
                        "num_key_value_heads": 8, "torch_dtype": "bfloat16", "max_position_embeddings": 40960},
     16_400_000_000, {}),
    ("RESERVED_MEMORY_GB=5", {"num_hidden_layers": 28, "hidden_size": 3584, "num_attention_heads": 28,
                              "num_key_value_heads": 4, "torch_dtype": "bfloat16", "max_position_embeddings": 32768},
     15_231_233_024, {"RESERVED_MEMORY_GB": "5"}),
    ("GPUSTACK_MODEL_VRAM_CLAIM", {"num_hidden_layers": 28, "hidden_size": 3584, "num_attention_heads": 28,
                                   "num_key_value_heads": 4, "max_position_embeddings": 32768},
     15_231_233_024, {"GPUSTACK_MODEL_VRAM_CLAIM": str(40 * GIB)}),
]


def _show(repo: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, "show", f"HEAD:{path}"], check=True, capture_output=True,
                          text=True).stdout


def _method(source: str, name: str) -> str:
    m = re.search(rf"^    (async )?def {name}\(.*?(?=^    (?:async )?def |^\S)", source, re.S | re.M)
    return textwrap.dedent(m.group(0))


def load(repo: str):
    base = _show(repo, BASE)
    enum_src = re.search(r"^class ModelAttentionTypeEnum\(enum\.Enum\):.*?(?=^\S)", base, re.S | re.M).group(0)
    params_src = re.search(r"^@dataclass\nclass ModelParameters:.*?(?=^\S)", base, re.S | re.M).group(0)
    ns: dict = {"enum": enum, "dataclass": dataclasses.dataclass, "fields": dataclasses.fields,
                "List": list, "Optional": lambda t: t, "Dict": dict, "Any": object, "Model": object}
    ns["Optional"] = __import__("typing").Optional
    ns["List"], ns["Dict"], ns["Any"] = __import__("typing").List, __import__("typing").Dict, __import__("typing").Any
    exec(enum_src, ns)
    exec(params_src, ns)
    estimate = _method(_show(repo, SELECTOR), "_estimate_usage")
    ns.update({"asyncio": asyncio, "logger": SimpleNamespace(info=lambda *a: None, warning=lambda *a: None),
               "RequestEstimateUsage": lambda ram, vram: SimpleNamespace(ram=ram, vram=vram),
               "SourceEnum": SimpleNamespace(HUGGING_FACE="hf", MODEL_SCOPE="ms", LOCAL_PATH="local"),
               "safe_int": lambda v, d=0: int(v) if str(v).lstrip("-").isdigit() else d,
               "byte_to_gib": lambda b: round(b / GIB, 2), "is_multimodal_model": lambda a: False,
               "compare_versions": lambda a, b: 0, "estimate_lora_weights_bytes": None})
    exec(estimate, ns)
    return ns


def run(ns, config: dict, weights: int, env: dict, max_len: int) -> int:
    params = ns["ModelParameters"]()
    for f in dataclasses.fields(params):  # ModelParameters.from_model_pretrained_config's copy of the config
        if config.get(f.name) is not None:
            setattr(params, f.name, config[f.name])
    params.derived_max_seq_len = max_len
    if not params.head_dim and params.hidden_size and params.num_attention_heads:
        params.head_dim = params.hidden_size // params.num_attention_heads
    ns["get_model_weight_size"] = lambda model, token: weights
    serving = SimpleNamespace(cpu_mem_size=0, max_seq_len=min(max_len, 8192), cache_block_size=128,
                              max_batch_size=200, max_prefill_tokens=min(max_len, 8192),
                              max_iter_times=min(max_len, 8192))
    self = SimpleNamespace(_model=SimpleNamespace(env=env, source="hf", lora_list=None, backend_version="2.3.0",
                                                  name="m"),
                           _config=SimpleNamespace(huggingface_token=None), _model_params=params,
                           _serving_params=serving)
    return asyncio.run(ns["_estimate_usage"](self)).vram


def main(repo: str) -> None:
    from stack.fetch_script import derive_max_len

    ns = load(repo)
    commit = subprocess.run(["git", "--git-dir", repo, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    cases = [{"name": name, "config": config, "weight_bytes": weights, "env": env,
              "vram": run(ns, config, weights, env, derive_max_len(config))} for name, config, weights, env in CASES]
    json.dump({"source": f"gpustack/gpustack@{commit}: {SELECTOR} AscendMindIEResourceFitSelector._estimate_usage "
                         f"with {BASE} ModelParameters.get_attention_type, run here (python -m tests.mindie_golden); "
                         "model, serving and model parameters are stand-ins with MindIE's defaults and the case's "
                         "config values",
               "license": "Apache-2.0, see NOTICE", "cases": cases}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
