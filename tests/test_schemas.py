"""JSON Schema for editors: generated from the models, kept current, named by every YAML file, and right."""
from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from cli.schemas import FILES, KINDS, schema_text

from .conftest import ROOT, run_cli

YAML_FILES = {"backend": sorted((ROOT / "backends").glob("*/spec.yaml")),
              "inventory": [ROOT / "inventory" / "demo.yaml"], "stack": [ROOT / "stack" / "demo.yaml"]}


@pytest.mark.parametrize("kind", KINDS)
def test_the_committed_schema_is_what_the_command_prints(kind):
    printed = run_cli("schema", kind)
    assert printed.code == 0
    assert printed.out == schema_text(kind) == (ROOT / FILES[kind]).read_text(), \
        f"run: gpufleet schema {kind} > {FILES[kind]}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_repository_file_names_its_schema_and_validates(kind):
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / FILES[kind]).read_text()))
    for path in YAML_FILES[kind]:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target == (ROOT / FILES[kind]).resolve(), path
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path, [e.message for e in errors])


def test_gpustacks_catalog_validates_against_the_backend_schema():
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / FILES["backend"]).read_text()))
    catalog = yaml.safe_load((ROOT / "tests" / "data" / "gpustack" / "gpustack-community-catalog.yaml").read_text())
    assert not list(validator.iter_errors(catalog))


@pytest.mark.parametrize("kind, text, bad", [
    ("inventory", "hosts: [{name: a, address: 127.0.0.1, accelerators: [{vendor: nvidia, model: x, vram: 80GB, "
                  "count: 1}]}]", "80GB"),
    ("stack", "inventory: x.yaml\ndeployments: {a: {backend: vLLM, model: {huggingface: a/b}, replicas: -1}}", "-1"),
    ("stack", "inventory: x.yaml\nstrategy: binpak\n", "binpak"),
    ("inventory", "hosts: [{name: a, address: 127.0.0.1, lables: {}}]", "lables"),
])
def test_the_schemas_flag_what_gpufleet_refuses(kind, text, bad):
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / FILES[kind]).read_text()))
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(text))]
    assert errors and any(bad in m for m in errors), errors


def test_sizes_and_durations_are_described_as_people_write_them():
    stack = json.loads((ROOT / FILES["stack"]).read_text())
    health = stack["$defs"]["Health"]["properties"]["timeout"]
    assert "10m" in health["description"]
    validator = jsonschema.Draft202012Validator(stack)
    assert not list(validator.iter_errors({"inventory": "x", "health": {"timeout": "15m"},
                                           "deployments": {"a": {"backend": "vLLM", "model": {"huggingface": "a/b"},
                                                                 "resources": {"vram": "30GiB", "shm": "16GiB"}}}}))


def test_the_readmes_file_reference_is_generated_from_the_schemas():
    from cli.reference import BEGIN, END, reference

    readme = (ROOT / "README.md").read_text()
    assert readme[readme.index(BEGIN):readme.index(END) + len(END)] == reference(), \
        "run: python -m cli.reference --write"
    for key in ("`backend_name`", "`max_unavailable`", "`model_roots`", "`pci_bus_id`", "`drop_default_parameters`"):
        assert key in reference()
