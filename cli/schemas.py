"""``gpufleet schema backend|inventory|stack``: JSON Schema for editors, from the pydantic models.

Each YAML file in the repository names its schema on its first line
(``# yaml-language-server: $schema=…``), so editors complete keys and flag mistakes as you type.
The schemas describe what a person writes (``80GiB``, ``10m``, ``40000-40063``), not the numbers
the models keep. Backend specs allow keys gpufleet does not read, as GPUStack ignores them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backends.schema import BackendSpec
from documents.fields import describe_fields
from inventory.schema import InventoryFile
from stack.schema import StackFile

KINDS = ("backend", "inventory", "stack")
#: where each schema is kept in the repository (tests check they are current)
FILES = {"backend": Path("backends") / "spec.schema.json", "inventory": Path("inventory") / "inventory.schema.json",
         "stack": Path("stack") / "stack.schema.json"}


def _open_objects(node: Any) -> None:
    """GPUStack ignores keys it does not read (gpufleet notes them): no additionalProperties: false."""
    if isinstance(node, dict):
        node.pop("additionalProperties", None) if node.get("additionalProperties") is False else None
        for value in node.values():
            _open_objects(value)
    elif isinstance(node, list):
        for value in node:
            _open_objects(value)


def schema(kind: str) -> dict:
    describe_fields()
    if kind == "backend":
        spec = BackendSpec.model_json_schema()
        _open_objects(spec)
        source = spec["properties"]["backend_source"]
        source["enum"] = sorted(set(source.get("enum", [])) | {"built_in"})
        defs = spec.pop("$defs", {})
        out = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "gpufleet backend spec (GPUStack)",
               "$defs": {**defs, "BackendSpec": spec},
               "anyOf": [{"$ref": "#/$defs/BackendSpec"}, {"type": "array", "items": {"$ref": "#/$defs/BackendSpec"}}]}
        return out
    model = {"inventory": InventoryFile, "stack": StackFile}[kind]
    out = model.model_json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = f"gpufleet {kind} file"
    return out


def schema_text(kind: str) -> str:
    return json.dumps(schema(kind), indent=2, sort_keys=True) + "\n"


def register(sub) -> None:
    s = sub.add_parser("schema", help="print the JSON Schema of a file kind (for editors)",
                       description="Print JSON Schema generated from gpufleet's models. The repository keeps them "
                                   "as backends/spec.schema.json, inventory/inventory.schema.json and "
                                   "stack/stack.schema.json; YAML files name them on their first line.")
    s.add_argument("kind", choices=KINDS)
    s.set_defaults(run=lambda args: print(schema_text(args.kind), end="") or 0)
