"""MindIE as GPUStack runs it: a generated config.json and the MindIE service daemon.

MindIE takes no serving flags: its daemon reads ``conf/config.json``. GPUStack's worker
(``gpustack/worker/backends/ascend_mindie.py``, ``AscendMindIEServer._start``) loads its own
template (``_get_mindie_config_json``, kept verbatim in ``backends/mindie/config.template.json``),
changes it for the instance, writes it into the container, sets ``MIES_CONFIG_JSON_PATH``, and
runs ``bin/mindieservice_daemon`` through its serving script (``_get_serving_command_script``,
kept verbatim in ``backends/mindie/serve.sh``) as the entrypoint, in ``mindie-service/bin``.

Ported: the default path, where the deployment gives no MindIE parameters (GPUStack's
``apply_backend_parameters`` is false): listening, devices (logical indices 0..n-1), model name
and weight path, the sequence lengths from the model's config.json (``_derive_max_model_len``,
default 8192, capped at 8192 by ``_get_effective_max_seq_len``), and the environment GPUStack sets
and removes. Not ported: translating MindIE parameters (``AscendMindIEParameters``, about 70
options) into the file, multi-node rank tables, LoRA. A deployment with MindIE parameters is
refused with that reason.
"""
from __future__ import annotations

import json
from pathlib import Path

_HERE = Path(__file__).parent / "mindie"
TEMPLATE: dict = {k: v for k, v in json.loads((_HERE / "config.template.json").read_text()).items()
                  if not k.startswith("_")}
SERVE_SCRIPT = (_HERE / "serve.sh").read_text()

#: "Root path is defined by in Dockerfile ENV" (gpustack/runner pack/cann/Dockerfile)
INSTALL_PATH = "/usr/local/Ascend/mindie/latest/mindie-service"
CONFIG_PATH = f"{INSTALL_PATH}/conf/config.json"
DAEMON = f"{INSTALL_PATH}/bin/mindieservice_daemon"
WORKING_DIR = f"{INSTALL_PATH}/bin"
#: GPUStack's _get_effective_max_seq_len cap, and _derive_max_model_len's default without a config.json
MAX_SEQ_LEN = 8192
#: the sequence length until the fetch has read config.json (stack.containers.finalize_command)
PENDING_SEQ_LEN = "__gpufleet_max_seq_len__"

#: env.pop(KEY, DEFAULT): GPUStack's default unless the deployment sets it
ENV_DEFAULTS = {
    "MIES_SERVICE_MONITOR_MODE": "1", "MIES_RECOMPUTE_THRESHOLD": "0.5", "MINDIE_LLM_RECOMPUTE_THRESHOLD": "0.5",
    "MINDIE_LLM_CONTINUOUS_BATCHING": "1", "NPU_MEMORY_FRACTION": "0.8", "OMP_NUM_THREADS": "1",
    "SAFETENSORS_FAST_GPU": "1", "MINDIE_ASYNC_SCHEDULING_ENABLE": "1", "TASK_QUEUE_ENABLE": "1",
    "CPU_AFFINITY_CONF": "1", "ATB_LAYER_INTERNAL_TENSOR_REUSE": "1", "INF_NAN_MODE_ENABLE": "0",
    "ATB_LLM_ENABLE_AUTO_TRANSPOSE": "1", "ATB_CONVERT_NCHW_TO_ND": "1", "ATB_WORKSPACE_MEM_ALLOC_ALG_TYPE": "3",
    "ATB_WORKSPACE_MEM_ALLOC_GLOBAL": "1", "PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True",
}
#: set whatever the deployment says
ENV_FORCED = {"MIES_INSTALL_PATH": INSTALL_PATH, "MINDIE_CHECK_INPUTFILES_PERMISSION": "0",
              "MINDIE_LLM_FRAMEWORK_BACKEND": "ATB", "ATB_OPERATION_EXECUTE_ASYNC": "1",
              "MIES_CONFIG_JSON_PATH": CONFIG_PATH}
#: "Pop conflict configuration items" (single host: MIES_CONTAINER_IP and HOST_IP too)
ENV_REMOVED = ("NPU_VISIBLE_DEVICES", "NPU-VISIBLE-DEVICES", "NPU_DEVICE_IDS", "ASCEND_LAUNCH_BLOCKING",
               "ASCEND_RT_VISIBLE_DEVICES", "MIES_CONTAINER_MANAGEMENT_IP", "WORLD_SIZE", "RANKTABLEFILE",
               "RANK_TABLE_FILE", "MIES_CONTAINER_IP", "HOST_IP")


def environment(env: dict[str, str]) -> dict[str, str]:
    """The container's environment as GPUStack leaves it for MindIE."""
    out = {k: v for k, v in env.items() if k not in ENV_REMOVED}
    for key, value in ENV_DEFAULTS.items():
        out.setdefault(key, value)
    out.update(ENV_FORCED)
    return out


def max_seq_len(derived: int | None) -> int:
    """``_derive_max_model_len(default=8192)`` then ``_get_effective_max_seq_len``: at most 8192."""
    derived = MAX_SEQ_LEN if derived is None else derived
    return MAX_SEQ_LEN if derived > MAX_SEQ_LEN else derived


def config(model_path: str, model_name: str, worker_ip: str, port: int, npus: int,
           seq_len: int | str) -> dict:
    """GPUStack's template with the changes ``_start`` makes for one single-host instance."""
    cfg = json.loads(json.dumps(TEMPLATE))
    server, backend = cfg["ServerConfig"], cfg["BackendConfig"]
    deploy = backend["ModelDeployConfig"]
    model, schedule = deploy["ModelConfig"][0], backend["ScheduleConfig"]
    server["ipAddress"] = worker_ip
    server.pop("managementIpAddress", None)
    server["allowAllZeroIpListening"] = True
    server["maxLinkNum"] = 1000
    server["port"] = server["managementPort"] = server["metricsPort"] = port
    server["httpsEnabled"] = False
    server["interCommTLSEnabled"] = False
    backend["interNodeTLSEnabled"] = False
    backend["npuDeviceIds"] = [list(range(npus))]
    model["worldSize"] = npus
    backend["multiNodesInferEnabled"] = False
    deploy["maxSeqLen"] = deploy["maxInputTokenLen"] = seq_len
    deploy["truncation"] = False
    schedule["maxIterTimes"] = schedule["maxPrefillTokens"] = seq_len
    model["modelName"] = model_name
    model["modelWeightPath"] = model_path
    return cfg


def config_text(cfg: dict) -> str:
    """As GPUStack writes it: ``json.dumps(config, indent=4, ensure_ascii=False)``."""
    return json.dumps(cfg, indent=4, ensure_ascii=False)


def settle(text: str, derived: int | None) -> str:
    """The file once the fetch has read the model's config.json."""
    return text.replace(f'"{PENDING_SEQ_LEN}"', str(max_seq_len(derived)))
