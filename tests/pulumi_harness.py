"""Run the whole Pulumi program under pulumi.runtime.set_mocks (Pulumi's unit-test method; no CLI).

Each call sets fresh mocks and config, runs ``components.program.run`` and records every
resource registration, the stack outputs and the log lines.
"""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pulumi

SECRET_SIG = "4dabf18193072939515e22adb298388d"


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, sink: list | None = None, stack_outputs: dict | None = None) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = [] if sink is None else sink
        #: what a StackReference to this stack reads back: its outputs of the last `pulumi up`
        self.stack_outputs = stack_outputs or {}

    def new_resource(self, args):
        self.resources.append(args)
        if args.typ == "pulumi:pulumi:StackReference":
            return f"{args.name}-id", {"name": args.inputs.get("name"), "outputs": self.stack_outputs,
                                       "secretOutputNames": []}
        outputs = dict(args.inputs)
        spec = args.inputs.get("spec")
        if args.typ == "pulumi-python:dynamic:Resource" and isinstance(spec, dict) and "local_dir" in spec:
            # a model fetch: a glob resolves to a file in the folder, as the fetch script names it
            outputs["model_path"] = spec.get("model_path") or spec["local_dir"] + "/resolved-by-mock.gguf"
            # what the fetch reads from config.json: a long-context model (GPUStack then caps at 8192)
            outputs["max_model_len"] = 32768
        if args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = "sha256:" + hashlib.sha256(args.inputs["name"].encode()).hexdigest()[:12]
        return f"{args.name}-id", outputs

    def call(self, args):
        return {}, None


@dataclass
class Run:
    resources: list
    outputs: dict = field(default_factory=dict)
    logs: str = ""
    #: resource options by resource name, as the program passed them (recorded by a transformation)
    options: dict = field(default_factory=dict)

    def of_type(self, suffix: str) -> list:
        return [r for r in self.resources if r.typ.endswith(suffix)]

    @property
    def containers(self) -> dict:
        return {r.inputs["name"]: r for r in self.of_type("/container:Container")}


def plain(value):
    """Unwrap Pulumi's secret envelope; returns (value, was_secret)."""
    if isinstance(value, dict) and value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
        return value["value"], True
    return value, False


def run_program(root: Path, stack: str = "demo", config: dict | None = None, secrets: dict | None = None,
                preview: bool = True, sink: list | None = None, stack_outputs: dict | None = None) -> Run:
    """``sink`` receives every registration even when the program fails."""
    from components.program import run

    mocks = RecordingMocks(sink, stack_outputs)
    buf = io.StringIO()
    logger = logging.getLogger(f"gpufleet-test-{id(buf)}")
    logger.addHandler(logging.StreamHandler(buf))
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    pulumi.runtime.set_mocks(mocks, project="gpufleet", stack=stack, preview=preview, logger=logger)
    values = {f"gpufleet:{k}": str(v) for k, v in (config or {}).items()}
    values.update({f"gpufleet:{k}": v for k, v in (secrets or {}).items()})
    pulumi.runtime.set_all_config(values, [f"gpufleet:{k}" for k in (secrets or {})])
    result = Run(mocks.resources)

    def record(args: pulumi.ResourceTransformationArgs):
        result.options[args.name] = args.opts
        return None

    @pulumi.runtime.test
    def program():
        pulumi.runtime.register_stack_transformation(record)
        return pulumi.Output.from_input(run(root)).apply(result.outputs.update)

    try:
        program()
    finally:
        result.logs = buf.getvalue()
    return result
