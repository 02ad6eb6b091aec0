"""Record GPUStack's SGLang memory fraction, for tests/test_resource_fit.py to hold the port to.

    python -m tests.sglang_golden /work/.mirror/gpustack+gpustack/repo > tests/data/gpustack/sglang_mem_fraction.json

Runs GPUStack's own code from a git checkout of gpustack/gpustack: the ``MemFractionStaticCalculator``
class of ``policies/candidate_selectors/sglang_resource_fit_selector.py`` and the parameter helpers of
``utils/command.py`` and ``utils/unit.py``, executed as they are; only the objects they read (the
model's backend parameters and config, the workers' GPUs) are stand-ins.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace
from typing import Dict, List, Optional

SELECTOR = "gpustack/policies/candidate_selectors/sglang_resource_fit_selector.py"
COMMAND = "gpustack/utils/command.py"
UNIT = "gpustack/utils/unit.py"

CASES = [
    # (device MiB of every GPU of the type, framework, backend parameters, vision config)
    *[([mib], fw, [], None) for fw in ("cuda", "rocm") for mib in (16384, 24576, 40960, 49152, 81559, 143771, 196608)],
    *[([mib], "cann", [], None) for mib in (32768, 65536)],
    ([24576, 81559], "cuda", [], None),
    ([81559], "cuda", ["--tp-size=4"], None),
    ([24576], "cuda", ["--tp-size", "4"], None),
    ([40960], "cuda", ["--tensor-parallel-size=8"], None),
    ([81559], "cuda", ["--chunked-prefill-size=16384", "--cuda-graph-max-bs=64"], None),
    ([81559], "cuda", ["--pp-size=2"], None),
    ([81559], "cuda", ["--enable-dp-attention", "--dp-size=4", "--tp-size=4"], None),
    ([81559], "cuda", ["--speculative-algorithm=EAGLE"], None),
    ([81559], "cuda", ["--speculative-algorithm=STANDALONE"], None),
    ([81559], "cuda", ["--speculative-algorithm=NGRAM"], None),
    ([81559], "cuda", ["--enable-piecewise-cuda-graph", "--piecewise-cuda-graph-max-tokens=4096"], None),
    ([81559], "cuda", [], {"num_hidden_layers": 32, "hidden_size": 1280}),
    ([24576], "cuda", [], {"depth": 27, "hidden_size": 1152}),
    ([81559], "cuda", ["--mem-fraction-static=0.7"], None),
]


def _show(repo: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, "show", f"HEAD:{path}"], check=True, capture_output=True,
                          text=True).stdout


def _functions(source: str, names: list[str]) -> str:
    out = []
    for name in names:
        m = re.search(rf"^def {name}\(.*?(?=^\S)", source, re.S | re.M)
        out.append(m.group(0))
    return "\n".join(out)


def load(repo: str):
    ns: dict = {"List": List, "Optional": Optional, "Dict": Dict, "ModelInstance": object, "Model": object,
                "ModelParameters": object, "Worker": object, "strtobool": lambda v: v.lower() in ("1", "true", "yes"),
                "sort_gpu_indexes_by_allocatable_rate": None, "get_worker_allocatable_resource": None}
    # the whole module, as it is, but for one import of a package not installed here (unused by these helpers)
    command = _show(repo, COMMAND).replace("from gpustack_runtime.deployer.__utils__ import compare_versions",
                                           "compare_versions = None")
    exec(command, ns)
    exec(_show(repo, UNIT), ns)
    selector = _show(repo, SELECTOR)
    cls = re.search(r"^class MemFractionStaticCalculator:.*", selector, re.S | re.M).group(0)
    exec(cls, ns)
    return ns["MemFractionStaticCalculator"]


def fraction(calculator, sizes_mib: list[int], framework: str, params: list[str], vision: dict | None):
    vendor = {"cuda": "nvidia", "rocm": "amd", "cann": "ascend"}[framework]
    gpus = [SimpleNamespace(index=i, vendor=vendor, type=framework, memory=SimpleNamespace(total=mib * 1024 ** 2))
            for i, mib in enumerate(sizes_mib)]
    worker = SimpleNamespace(name="w", status=SimpleNamespace(gpu_devices=gpus))
    model = SimpleNamespace(backend_parameters=params, gpu_selector=None)
    params_obj = SimpleNamespace(vision_config=SimpleNamespace(**vision) if vision else None)
    return calculator(model, [], params_obj, framework, {})._cal_mem_fraction_static([worker])


def main(repo: str) -> None:
    calculator = load(repo)
    commit = subprocess.run(["git", "--git-dir", repo, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    cases = [{"device_mib": sizes, "framework": fw, "backend_parameters": params, "vision_config": vision,
              "mem_fraction_static": fraction(calculator, sizes, fw, params, vision)}
             for sizes, fw, params, vision in CASES]
    json.dump({"source": f"gpustack/gpustack@{commit}: {SELECTOR} MemFractionStaticCalculator._cal_mem_fraction_static"
                         f" with {COMMAND} and {UNIT}, run here (python -m tests.sglang_golden); the workers, model and "
                         "its config are stand-ins holding only what the class reads",
               "license": "Apache-2.0, see NOTICE", "cases": cases}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
