"""Model fetch on a real test host: real sshd, real dockerd, the fetch container, a local Hub.

The fetch runs exactly as `pulumi up` runs it: ``components.model_fetch._fetch`` (the dynamic
provider's create) connects with paramiko and the inventory's known_hosts, runs the fetch image
with ``docker run`` on the host, and the image runs ``huggingface_hub`` against a local server that
speaks the Hub's download protocol (tests/hub_server.py). The replica then runs on what was fetched.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from components.model_fetch import _fetch
from inventory.fleet import load_fleet
from inventory.ssh import Endpoint
from stack.fetch_run import FetchFailed
from stack.fetches import render_fetch
from stack.plan import build_plan
from stack.project import load_project
from stack.schema import ModelFetch, ModelSource

from .conftest import ROOT
from .fetch_image import import_into
from .fleet_host import FleetHost
from .hub_server import HubServer, Repo
from .test_fleet import apply, docker_api, write_httpd_backend

TOKEN = "hf_gatedAccessToken42"
GGUF = os.urandom(2 << 20)


@pytest.fixture(scope="module")
def fetch_image(fleet_host: FleetHost, tmp_path_factory) -> str:
    return import_into(["docker", "-H", f"unix://{fleet_host.docker_socket}"], tmp_path_factory.mktemp("img"))


@pytest.fixture(scope="module")
def hub():
    repos = {
        "acme/web": Repo({"config.json": b'{"model_type": "web", "max_position_embeddings": 32768}', "v1/models": b'{"data": [{"id": "acme-web"}]}'}),
        "acme/tiny-GGUF": Repo({"README.md": b"# tiny", "tiny-Q4_K_M.gguf": GGUF, "tiny-Q8_0.gguf": b"q8" * 1000}),
        "acme/gated": Repo({"config.json": b"{}", "model.safetensors": b"w" * 4096}, gated=True),
        "acme/slow": Repo({"big.bin": b"x" * (4 << 20)}, stall_s=30),
    }
    with HubServer(repos, tokens={TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def project(fleet_host: FleetHost, fetch_image: str, hub: HubServer, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fetch-project")
    shutil.copy(ROOT / "Pulumi.yaml", root)
    write_httpd_backend(root)
    cache = tmp_path_factory.mktemp("cache")
    (root / "inventory").mkdir()
    (root / "inventory" / "fleet.yaml").write_text(
        f"hosts:\n  - name: fleet-1\n    address: {fleet_host.address}\n"
        f"    ssh: {{user: root, port: 22, identity_file: {fleet_host.identity}, "
        f"known_hosts: {fleet_host.known_hosts}}}\n"
        f"    port_range: 40100-40109\n    model_cache: {cache}\n")
    (root / "stack").mkdir()
    (root / "stack" / "fleet.yaml").write_text(
        "inventory: ../inventory/fleet.yaml\nhealth: {timeout: 60s, interval: 1s, start_period: 1s, retries: 5}\n"
        f"model_fetch: {{image: '{fetch_image}', hf_endpoint: '{hub.url}', timeout: 5m}}\n"
        "deployments:\n  web:\n    backend: httpd-custom\n    model: {huggingface: acme/web}\n"
        "    resources: {gpus: 0, shm: 64MiB}\n")
    return root


def _host(project: Path):
    return load_fleet(project / "inventory" / "fleet.yaml", "inventory/fleet.yaml").host("fleet-1")


def fetch(project: Path, spec, secrets=None, outputs=None) -> str:
    """The dynamic provider's create, as `pulumi up` calls it; returns the model path."""
    props = {"endpoint": asdict(Endpoint.of(_host(project))), "spec": asdict(spec), "secrets": secrets or {}}
    # as the engine hands them to the provider: tuples as lists, None-valued keys left out
    props = json.loads(json.dumps(props), object_hook=lambda d: {k: v for k, v in d.items() if v is not None})
    result = _fetch(props)
    if outputs is not None:
        outputs.update(result)
    return result["model_path"]


def test_the_replica_runs_on_the_model_its_host_fetched(project, hub, capsys):
    plan = build_plan(load_project("fleet", project))
    (spec,) = plan.containers
    cache = _host(project).model_cache
    folder = f"{cache}/huggingface/acme/web"
    assert spec.fetch is not None and spec.fetch.model_path == folder
    assert spec.command[-2:] == ("-h", folder)  # {{model_path}} is the local path, not the repository id
    outputs: dict = {}
    assert fetch(project, spec.fetch, outputs=outputs) == folder
    assert outputs["max_model_len"] == 32768  # read from the fetched config.json (GPUStack's derivation)
    out = capsys.readouterr().out
    assert "acme/web on fleet-1: start: acme/web, 2 files" in out and "resolved: " + folder in out
    assert Path(folder, "config.json").read_bytes() == b'{"model_type": "web", "max_position_embeddings": 32768}'
    # the engine serves the fetched files: its health path is one of them
    api = docker_api(_host(project))
    try:
        apply(api, spec)
        deadline = time.monotonic() + 60
        while api.inspect(spec.name)["State"].get("Health", {}).get("Status") != "healthy":
            assert time.monotonic() < deadline, api.inspect(spec.name)["State"]
            time.sleep(0.5)
    finally:
        api.remove(spec.name)


def test_a_model_already_in_the_cache_is_not_fetched_again(project, hub, capsys):
    spec = build_plan(load_project("fleet", project)).containers[0].fetch
    fetch(project, spec)
    before = sum(hub.requests.values())
    assert fetch(project, spec) == spec.model_path
    assert sum(hub.requests.values()) == before  # not even a listing: the host had every file
    assert "cached: acme/web already in" in capsys.readouterr().out


def test_a_gguf_glob_fetches_the_matching_file_only(project, hub):
    host = _host(project)
    spec = render_fetch(host, ModelSource(huggingface="acme/tiny-GGUF", huggingface_filename="*q4_k_m*.gguf"),
                        ModelFetch(image=project_image(project), hf_endpoint=hub.url))
    assert spec.model_path is None  # a glob: the fetch resolves it
    with pytest.raises(FetchFailed, match=r"no file in acme/tiny-GGUF matches '\*q4_k_m\*\.gguf'; its files: "
                                          r"README\.md, tiny-Q4_K_M\.gguf, tiny-Q8_0\.gguf"):
        fetch(project, spec)  # fnmatch is case-sensitive on Linux, as in GPUStack's match_hugging_face_files
    spec = replace(spec, filename="*Q4_K_M*.gguf")
    path = fetch(project, spec)
    assert path == f"{host.model_cache}/huggingface/acme/tiny-GGUF/tiny-Q4_K_M.gguf"
    assert Path(path).read_bytes() == GGUF
    assert not Path(path).with_name("tiny-Q8_0.gguf").exists()


def test_a_gated_model_needs_a_token_and_the_token_never_shows(project, hub, capsys):
    host = _host(project)
    spec = render_fetch(host, ModelSource(huggingface="acme/gated"),
                        ModelFetch(image=project_image(project), hf_endpoint=hub.url, hf_token="secret:hfToken"))
    with pytest.raises(FetchFailed, match="secret 'hfToken' has no value"):
        fetch(project, spec)
    without = replace(spec, secret_env=())
    with pytest.raises(FetchFailed) as err:
        fetch(project, without)
    assert str(err.value) == ("acme/gated on fleet-1: acme/gated is gated: the Hub wants a token of an account that "
                              "accepted its terms; set model_fetch.hf_token: secret:NAME in the stack file and "
                              "pulumi config set --secret NAME hf_…")
    with pytest.raises(FetchFailed, match="the token given has no access"):
        fetch(project, spec, {"hfToken": "hf_wrong"})
    assert fetch(project, spec, {"hfToken": TOKEN}) == f"{host.model_cache}/huggingface/acme/gated"
    assert Path(host.model_cache, "huggingface/acme/gated/model.safetensors").read_bytes() == b"w" * 4096
    assert TOKEN not in capsys.readouterr().out


def test_a_stalled_fetch_stops_at_its_own_timeout_and_leaves_nothing_running(project, hub, fleet_host):
    spec = render_fetch(_host(project), ModelSource(huggingface="acme/slow"),
                        ModelFetch(image=project_image(project), hf_endpoint=hub.url, timeout="4s"))
    # the stalled file would arrive after 30 s: a fetch that ignored its 4 s limit would succeed
    with pytest.raises(FetchFailed, match=r"acme/slow on fleet-1: not fetched within 4 s \(.*\); the partial "
                                          "download stays in the cache"):
        fetch(project, spec)
    left = fleet_host.local_docker("ps", "-a", "--filter", "label=gpufleet.fetch", "--format", "{{.Names}}").stdout
    assert left.strip() == ""


def project_image(project: Path) -> str:
    return load_project("fleet", project).stack.model_fetch.image


def test_where_models_land_follows_gpustacks_downloaders(project):
    """gpustack/worker/downloaders.py: <cache>/huggingface/<owner>/<name>, <cache>/model_scope/...,
    an id without an owner under ModelScope's default group."""
    host = _host(project)
    c = host.model_cache
    settings = ModelFetch()
    cases = {
        ModelSource(huggingface="Qwen/Qwen3-8B"): (f"{c}/huggingface/Qwen/Qwen3-8B", f"{c}/huggingface/Qwen/Qwen3-8B"),
        ModelSource(modelscope="qwen/Qwen3-8B"): (f"{c}/model_scope/qwen/Qwen3-8B", f"{c}/model_scope/qwen/Qwen3-8B"),
        ModelSource(huggingface="gpt2"): (f"{c}/huggingface/damo/gpt2", f"{c}/huggingface/damo/gpt2"),
        ModelSource(huggingface="o/m-GGUF", huggingface_filename="m-Q4_K_M.gguf"):
            (f"{c}/huggingface/o/m-GGUF", f"{c}/huggingface/o/m-GGUF/m-Q4_K_M.gguf"),
        ModelSource(modelscope="o/m-GGUF", model_scope_file_path="*Q8_0*.gguf"): (f"{c}/model_scope/o/m-GGUF", None),
    }
    for source, (folder, path) in cases.items():
        spec = render_fetch(host, source, settings)
        assert (spec.local_dir, spec.model_path) == (folder, path), source
    assert render_fetch(host, ModelSource(local_path="/srv/m"), settings) is None


def test_the_token_travels_on_stdin_never_in_argv():
    from stack.fetch_run import run_fetch
    from stack.fetches import FetchSpec

    spec = FetchSpec(host="h", source="huggingface", repo="o/m", filename=None, cache="/c", local_dir="/c/huggingface/o/m",
                     model_path="/c/huggingface/o/m", image="img", env=(("HF_ENDPOINT", "http://mirror"),),
                     secret_env=(("HF_TOKEN", "hfToken"),), timeout_s=60, max_workers=8)
    seen = {}

    def stream(argv, stdin, on_line, timeout):
        seen.update(argv=argv, stdin=stdin, timeout=timeout)
        on_line("gpufleet-fetch resolved: /c/huggingface/o/m")
        return 0

    assert run_fetch(stream, lambda argv: (0, "", ""), spec, {"hfToken": TOKEN}).model_path == "/c/huggingface/o/m"
    assert TOKEN not in " ".join(seen["argv"]) and seen["stdin"] == f"HF_TOKEN={TOKEN}\n".encode()
    assert seen["argv"][seen["argv"].index("--env-file") + 1] == "/dev/stdin" and seen["timeout"] == 60
    assert "HF_ENDPOINT=http://mirror" in seen["argv"]


def test_a_fetch_runs_again_only_when_what_is_fetched_changes():
    from components.model_fetch import _ModelFetchProvider
    from stack.fetches import FetchSpec

    spec = asdict(FetchSpec("h", "huggingface", "o/m", None, "/c", "/c/huggingface/o/m", "/c/huggingface/o/m",
                            "img", (), (("HF_TOKEN", "hfToken"),), 60, 8))
    old = {"spec": spec, "endpoint": {"name": "h"}, "secrets": {"hfToken": "a"}, "model_path": "/c/huggingface/o/m"}
    provider = _ModelFetchProvider()
    assert provider.diff("id", old, {**old, "secrets": {"hfToken": "rotated"}, "model_path": None}).changes is False
    other = {**old, "spec": {**spec, "image": "img:2"}}
    assert provider.diff("id", old, other).changes is True
