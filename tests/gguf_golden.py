"""Record what GPUStack's gguf-parser says each GPU needs, for tests/test_gguf.py to hold the port to.

    python -m tests.gguf_golden PATH/TO/gguf-parser-linux-amd64 > tests/data/gguf/estimates.json

The binary is the one GPUStack 0.3.0 shipped (``gpustack/third_party/bin/gguf-parser`` in its
manylinux wheel on PyPI; ``--version`` says v0.11.0). Every case runs it on a file rebuilt from a
brief in tests/data/gguf (header written back, tensor data left as a hole of the recorded size) with
GPUStack's own default arguments and the case's changes, and keeps each GPU's non-UMA VRAM.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.gguf_brief import write_sparse

DATA = Path(__file__).parent / "data" / "gguf"
GPUSTACK_DEFAULTS = ["--ctx-size", "8192", "--parallel-size", "4", "--platform-footprint", "150,500",
                     "--no-mmap", "--gpu-layers", "-1"]

CASES = [
    {"name": "defaults, 1 GPU", "args": [], "split": [1]},
    {"name": "2 equal GPUs", "args": [], "split": [24576, 24576]},
    {"name": "3 unequal GPUs", "args": [], "split": [16384, 24576, 81920]},
    {"name": "4 equal GPUs", "args": [], "split": [81920] * 4},
    {"name": "ctx 32768", "args": ["--ctx-size", "32768"], "split": [1]},
    {"name": "ctx 1000 (padded)", "args": ["--ctx-size", "1000"], "split": [1]},
    {"name": "parallel 1", "args": ["--parallel-size", "1"], "split": [1]},
    {"name": "ubatch 256, batch 1024", "args": ["--ubatch-size", "256", "--batch-size", "1024"], "split": [1]},
    {"name": "flash attention", "args": ["--flash-attention"], "split": [1]},
    {"name": "flash attention, ctx 5000, 2 GPUs", "args": ["--flash-attention", "--ctx-size", "5000"],
     "split": [40960, 40960]},
]


def main(parser: str) -> None:
    out = []
    for brief_file in sorted(DATA.glob("*.brief.json")):
        brief = json.loads(brief_file.read_text())
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/model.gguf"
            write_sparse(brief, path)
            for case in CASES:
                args = [parser, "--path", path, "--skip-tokenizer", "--skip-metadata", "--skip-architecture",
                        "--json", "--json-pretty=false", *GPUSTACK_DEFAULTS, *case["args"]]
                if len(case["split"]) > 1:
                    args += ["--tensor-split", ",".join(map(str, case["split"]))]
                got = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
                item = got["estimate"]["items"][0]
                out.append({"brief": brief_file.name, **case, "context_size": got["estimate"]["contextSize"],
                            "vram_nonuma": [v["nonuma"] for v in item["vrams"]]})
    json.dump({"gguf_parser": subprocess.run([parser, "--version"], capture_output=True, text=True).stdout.strip(),
               "defaults": GPUSTACK_DEFAULTS, "cases": out}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
