"""`gpufleet models --stack S`: record the metadata `auto` resources are sized from.

Writes ``stack/<stack>.models.yaml`` (commit it beside the lock): per model its weight size,
attention heads, parameters per dtype (safetensors headers) or the layers gguf-parser's estimate
needs (a GGUF header), read from the Hub (or ``HF_ENDPOINT``), ModelScope (``MODELSCOPE_DOMAIN``) or a
local model folder or file. Plans and
previews read only the file, so they stay offline and repeatable.
"""
from __future__ import annotations

import sys

import yaml

from documents.problems import InputError, Problem
from stack.project import display, find_root, load_stack_file, stack_path
from stack.resource_fit import model_key, models_path, read_models

EXIT_OK = 0


def register(sub) -> None:
    p = sub.add_parser("models", help="record the model sizes that `auto` resources are fitted from",
                       description="For every deployment with resources gpus: auto or vram: auto, read the model's "
                                   "weight size, attention heads and weight-file headers (the Hub's file listing "
                                   "and range reads of config.json and of the safetensors or GGUF headers, or a "
                                   "local model folder or .gguf file) and write stack/<stack>.models.yaml. "
                                   "Plans read that file and never the network. HF_TOKEN and HF_ENDPOINT (and for "
                                   "ModelScope MODELSCOPE_DOMAIN and MODELSCOPE_API_TOKEN) are read from the "
                                   "environment.")
    p.add_argument("--stack", required=True, metavar="S", help="stack name (stack/S.yaml) or a path to a stack file")
    p.add_argument("--refresh", action="store_true", help="read every model again (default: only missing ones)")
    p.set_defaults(run=cmd_models)


def describe(meta) -> str:
    text = f"{meta.weight_bytes / 1024 ** 3:.2f} GiB of weights"
    if meta.parameters:
        text += (f", {sum(meta.parameters.values()) / 1e9:.2f} B parameters ("
                 + ", ".join(sorted(meta.parameters, key=meta.parameters.get, reverse=True)) + ")")
    if meta.gguf:
        g = meta.gguf
        text += (f", GGUF {g.architecture}: {g.block_count} layers, {g.parameters / 1e9:.2f} B parameters, "
                 f"trained context {g.context_length}")
    elif meta.num_attention_heads:
        text += f", {meta.num_attention_heads} attention heads"
    return text


def cmd_models(args) -> int:
    from stack.model_metadata import MetadataError, read  # HTTP: imported by the one command that reads hubs

    root = args.root or find_root()
    path = stack_path(root, args.stack)
    stack, _ = load_stack_file(path, root)
    target = models_path(path)
    shown = display(target, root)
    known = {} if args.refresh else read_models(target, shown)
    wanted = {model_key(d.model): d.model for d in stack.deployments.values() if d.resources.auto}
    problems = []
    out = {k: v for k, v in known.items() if k in wanted}
    for key, source in sorted(wanted.items()):
        if key in out:
            continue
        try:
            out[key] = read(source)
            print(f"{key}: {describe(out[key])}", file=sys.stderr)
        except MetadataError as err:
            problems.append(Problem(display(path, root), 0, 0, "", f"{key}: {err}"))
    if problems:
        raise InputError(problems)
    body = {"models": {k: v.model_dump(exclude_none=True) for k, v in sorted(out.items())}}
    # a GGUF's per-layer sizes on one line each, not one line per number
    yaml_text = yaml.safe_dump(body, sort_keys=True, width=120, default_flow_style=None)
    target.write_text(f"# Model sizes for `auto` resources of stack '{path.stem}', written by `gpufleet models "
                      f"--stack {args.stack}`.\n# Commit it beside the lock: plans read it, never the network.\n"
                      + yaml_text)
    print(f"wrote: {shown} ({len(out)} model{'s' if len(out) != 1 else ''})")
    return EXIT_OK
