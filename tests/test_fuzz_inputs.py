"""Random and mutated documents: the loaders raise InputError or succeed, never anything else."""
from __future__ import annotations

import random

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.catalog import load_file
from documents.problems import InputError
from inventory.fleet import load_fleet
from stack.project import load_project

from .conftest import ROOT

SEEDS = {
    "backend": (ROOT / "backends" / "vllm" / "spec.yaml").read_text(),
    "inventory": (ROOT / "inventory" / "demo.yaml").read_text(),
    "stack": (ROOT / "stack" / "demo.yaml").read_text(),
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["whole", "80GiB", "-1", "{{x}}", "secret:", "cuda"]))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["backend_name", "version_configs", "hosts", "deployments", "inventory",
                                     "image_name", "custom_framework", "name", "address", "vram", "resources",
                                     "gpus", "backend", "model", "x"]) | st.text(max_size=6), inner, max_size=5)),
    max_leaves=20)


def _mutate(text: str, rnd: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(lines))
        op = rnd.randrange(6)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rnd.randrange(len(lines))])
        elif op == 2:
            lines[i] = lines[i].replace(":", "", 1)
        elif op == 3:
            lines[i] = "\t" + lines[i]
        elif op == 4:
            cut = rnd.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:cut] + rnd.choice(["{", "[", "'", '"', "&a", "*a", "!!binary ", "- ", ": "]) + \
                lines[i][cut:]
        else:
            lines[i] = lines[i].replace("GiB", "GB").replace("cuda", "cuba").replace("vLLM", "vllm")
    return "".join(lines)


def _load(kind: str, path):
    if kind == "backend":
        load_file(path)
    elif kind == "inventory":
        load_fleet(path)
    else:
        load_project(str(path), ROOT)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents, kind=st.sampled_from(sorted(SEEDS)))
def test_random_documents_only_raise_input_error(tmp_path_factory, doc, kind):
    path = tmp_path_factory.mktemp("fuzz") / "doc.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        _load(kind, path)
    except InputError as err:
        assert all(p.message for p in err.problems)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32), kind=st.sampled_from(sorted(SEEDS)))
def test_mutated_real_files_only_raise_input_error(tmp_path_factory, seed, kind):
    folder = tmp_path_factory.mktemp("mut")
    path = folder / "doc.yaml"
    text = _mutate(SEEDS[kind], random.Random(seed))
    if kind == "stack":
        text = text.replace("../inventory/demo.yaml", str(ROOT / "inventory" / "demo.yaml"))
    path.write_text(text)
    try:
        _load(kind, path)
    except InputError as err:
        for p in err.problems:
            assert p.file and p.message
            assert p.line >= 0


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200))
def test_random_bytes_only_raise_input_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("bytes") / "doc.yaml"
    path.write_bytes(raw)
    try:
        load_fleet(path)
    except InputError:
        pass
