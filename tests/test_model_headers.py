"""GGUF and safetensors headers of real public models, read as their consumers read them.

The GGUF reader is held to gguf-parser's own record of real files (tests/data/gguf/SOURCES.md), the
llama.cpp estimate to what GPUStack's gguf-parser binary printed for them, the safetensors reader to
huggingface.js's and the Hub's records of bert-base-uncased; hostile headers get an error, never a
traceback or an endless read.
"""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stack import gguf_header, safetensors_header
from stack.gguf_estimate import Options, facts, vram_per_gpu
from stack.resource_fit import gguf_options

from .conftest import copy_project, run_cli
from .gguf_brief import header_bytes
from .hub_server import HubServer, Repo
from .test_plan_cli import edit

DATA = Path(__file__).parent / "data"
BRIEF = json.loads((DATA / "gguf" / "Meta-Llama-3.1-8B-Instruct-Q8_0.brief.json").read_text())
LLAMA = header_bytes(BRIEF)
PHI3_VOCAB = gzip.decompress((DATA / "gguf" / "ggml-vocab-phi-3.gguf.gz").read_bytes())
BERT_JSON = (DATA / "safetensors" / "bert-base-uncased.header.json").read_bytes()
BERT = struct.pack("<Q", len(BERT_JSON)) + BERT_JSON
MIB = 1024 ** 2


def reader(data: bytes):
    return lambda offset, length: data[offset:offset + length]


def test_a_real_gguf_file_reads_as_gguf_parser_reads_it():
    h = gguf_header.read_header(reader(PHI3_VOCAB), "ggml-vocab-phi-3.gguf")
    # gguf-parser v0.11.0 --raw on the same file: tensorDataStartOffset 726048, 26 metadata keys, no tensors
    assert (h.version, h.data_offset, len(h.metadata), h.tensors) == (3, 726048, 26, [])
    md = h.metadata
    assert (md["general.architecture"], md["phi3.block_count"], md["phi3.context_length"]) == ("phi3", 32, 4096)
    assert (md["phi3.embedding_length"], md["phi3.attention.head_count_kv"]) == (3072, 32)
    assert md["tokenizer.ggml.tokens"] == gguf_header.ArrayInfo(8, 32064)
    assert md["tokenizer.ggml.add_bos_token"] is True and md["phi3.attention.layer_norm_rms_epsilon"] == \
        pytest.approx(1e-5)


def test_the_llama_3_1_header_has_the_size_gguf_parser_recorded():
    reads = []
    data = LLAMA + b"\0" * 4096

    def read(offset, length):
        reads.append((offset, length))
        return data[offset:offset + length]

    h = gguf_header.read_header(read, "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf")
    assert h.data_offset == BRIEF["tensorDataStartOffset"] == 7_840_928
    assert h.model_bytes == BRIEF["modelSize"] == 8_532_934_912
    assert h.parameters == BRIEF["modelParameters"] == 8_030_261_312
    assert [t.name for t in h.tensors] == [t["name"] for t in BRIEF["tensorInfos"]]
    assert [t.offset for t in h.tensors] == [t["offset"] for t in BRIEF["tensorInfos"]]
    # an 8 MB header in a few growing range reads, never the weights
    assert len(reads) <= 5 and sum(n for _, n in reads) < 16 * MIB


ESTIMATES = json.loads((DATA / "gguf" / "estimates.json").read_text())


@pytest.mark.parametrize("case", ESTIMATES["cases"], ids=lambda c: c["name"])
def test_the_estimate_is_gguf_parsers_to_the_byte(case):
    brief = json.loads((DATA / "gguf" / case["brief"]).read_text())
    data = header_bytes(brief)
    f = facts([gguf_header.read_header(reader(data), case["brief"])])
    opts = gguf_options([a for a in case["args"] if a != "--flash-attention"] +
                        (["--flash-attn"] if "--flash-attention" in case["args"] else []))
    assert vram_per_gpu(f, case["split"], opts) == case["vram_nonuma"]


def test_gpustacks_defaults_are_the_options_when_the_deployment_gives_none():
    assert gguf_options([]) == Options(ctx_size=8192, parallel=4, ubatch=512, batch=2048, flash_attention=False)
    assert gguf_options(["-c", "4096", "-np", "1", "-fa"]) == Options(4096, 1, 512, 2048, True)


def _gguf(kv: bytes = b"", tensors: bytes = b"", n_kv: int = 0, n_tensors: int = 0, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kv + tensors


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


@pytest.mark.parametrize("data, message", [
    (b"GGML" + b"\0" * 20, "does not start with GGUF"),
    (b"FUGG" + b"\0" * 20, "big-endian"),
    (_gguf(version=1), "GGUF version 1"),
    (_gguf(n_kv=1)[:-3], "ends at byte"),
    (_gguf(n_tensors=1 << 40), "claims 1099511627776 tensors"),
    (_gguf(struct.pack("<Q", 1 << 40), n_kv=1), "claims 1099511627776 bytes"),
    (_gguf(_s("a") + struct.pack("<IIQ", 9, 4, 1 << 60), n_kv=1), "claims 1152921504606846976 elements"),
    (_gguf(_s("a") + struct.pack("<IIQ", 9, 8, 1 << 60), n_kv=1), "strings"),
    (_gguf(_s("a") + struct.pack("<I", 13), n_kv=1), "value type 13"),
    (_gguf(tensors=_s("w") + struct.pack("<I", 9), n_tensors=1), "9 dimensions"),
    (_gguf(tensors=_s("w") + struct.pack("<IQIQ", 1, 32, 99, 0), n_tensors=1), "ggml type 99"),
    (_gguf(tensors=_s("w") + struct.pack("<IQIQ", 1, 33, 8, 0), n_tensors=1), "not a multiple of its type's block"),
    (_gguf(_s("general.alignment") + struct.pack("<II", 4, 24), n_kv=1), "power of two"),
])
def test_a_hostile_gguf_header_is_refused_with_the_reason(data, message):
    with pytest.raises(gguf_header.HeaderError, match=message):
        gguf_header.read_header(reader(data), "m.gguf")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(PHI3_VOCAB) - 1), st.binary(min_size=1, max_size=8), st.integers(8, len(PHI3_VOCAB)))
def test_any_damaged_gguf_file_reads_or_is_refused_and_never_hangs(at, junk, cut):
    damaged = (PHI3_VOCAB[:at] + junk + PHI3_VOCAB[at + len(junk):])[:cut]
    try:
        gguf_header.read_header(reader(damaged), "m.gguf")
    except gguf_header.HeaderError:
        pass


def test_a_real_safetensors_header_counts_what_huggingface_js_counts():
    info = safetensors_header.read_header(reader(BERT), "bert-base-uncased/model.safetensors")
    assert info.parameters == {"F32": 110_106_428}  # huggingface.js parse-safetensors.spec.ts
    assert info.file_bytes == 440_449_768  # the file's size on the Hub (its LFS pointer)


@pytest.mark.parametrize("data, message", [
    (b"\x01\x02", "2 bytes long"),
    (struct.pack("<Q", 200_000_000), "claims a 200000000-byte header"),
    (struct.pack("<Q", 50) + b"{}", "ends inside its 50-byte header"),
    (struct.pack("<Q", 5) + b"{nope", "not JSON"),
    (struct.pack("<Q", 2) + b"[]", "a JSON list"),
    (struct.pack("<Q", 40) + b'{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}}'[:40], "not JSON"),
    (b"", "0 bytes long"),
])
def test_a_hostile_safetensors_header_is_refused(data, message):
    with pytest.raises(safetensors_header.HeaderError, match=message):
        safetensors_header.read_header(reader(data), "m.safetensors")


@pytest.mark.parametrize("tensor, message", [
    ({"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}, "dtype 'Q4'"),
    ({"dtype": "F16", "shape": [-1], "data_offsets": [0, 2]}, "non-negative"),
    ({"dtype": "F16", "shape": [4], "data_offsets": [0, 6]}, "F16 \\[4\\] \\(8 bytes\\) but its data_offsets span 6"),
])
def test_a_tensor_that_disagrees_with_its_offsets_is_named(tensor, message):
    body = json.dumps({"w": tensor}).encode()
    with pytest.raises(safetensors_header.HeaderError, match=message):
        safetensors_header.read_header(reader(struct.pack("<Q", len(body)) + body), "m.safetensors")


@pytest.fixture
def hub():
    repos = {
        "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF": Repo(
            {"Meta-Llama-3.1-8B-Instruct-Q8_0.gguf": LLAMA, "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf": b"x",
             "README.md": b"#"},
            sizes={"Meta-Llama-3.1-8B-Instruct-Q8_0.gguf": BRIEF["size"]}),
        "google-bert/bert-base-uncased": Repo(
            {"model.safetensors": BERT, "config.json": json.dumps({"num_attention_heads": 12,
                                                                   "vocab_size": 30522}).encode()},
            sizes={"model.safetensors": 440_449_768}),
        "o/truncated": Repo({"model.safetensors": BERT}, sizes={"model.safetensors": 300_000_000}),
    }
    with HubServer(repos) as server:
        yield server


def _project(tmp_path, model: str, resources: str, backend: str = "llama.cpp\n    version: cuda"):
    project = copy_project(tmp_path)
    edit(project / "stack" / "demo.yaml", "deployments:", f"deployments:\n  fit:\n    backend: {backend}\n"
         f"    model: {model}\n    resources: {resources}\n")
    return project


def test_a_gguf_model_is_sized_by_gguf_parsers_estimate_from_its_header(tmp_path, hub, monkeypatch):
    project = _project(tmp_path, "{huggingface: bartowski/Meta-Llama-3.1-8B-Instruct-GGUF, "
                                 "huggingface_filename: '*Q8_0.gguf'}", "{gpus: auto}")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    r = run_cli("--root", project, "models", "--stack", "demo")
    assert r.code == 0, r.err
    assert "GGUF llama: 32 layers, 8.03 B parameters, trained context 131072" in r.err, r.err
    assert hub.downloads() == 0  # range reads of the header only
    meta = yaml.safe_load((project / "stack" / "demo.models.yaml").read_text())["models"][
        "huggingface:bartowski/Meta-Llama-3.1-8B-Instruct-GGUF:*Q8_0.gguf"]
    assert (meta["weight_bytes"], meta["gguf"]["weight_bytes"]) == (8_540_775_840, 8_532_934_912)  # file, tensors
    assert run_cli("--root", project, "lock", "--stack", "demo").code == 0
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    (fit,) = [f for f in data["resource_fit"] if f["deployment"] == "fit"]
    # gguf-parser: 10,195,673,088 bytes on one GPU at GPUStack's defaults (estimates.json)
    assert (fit["gpus"], fit["min_vram_mib"]) == (1, -(-10_195_673_088 // MIB))
    assert "--ctx-size 8192 (GPUStack's default; pass --ctx-size so llama-server uses the same)" in fit["estimate"]
    (rep,) = [x for x in data["replicas"] if x["deployment"] == "fit"]
    assert len(rep["gpus"]) == 1 and rep["vram_per_gpu_mib"] >= fit["min_vram_mib"]


def test_two_gpus_take_the_last_gpus_share(tmp_path, hub, monkeypatch):
    project = _project(tmp_path, "{huggingface: bartowski/Meta-Llama-3.1-8B-Instruct-GGUF, "
                                 "huggingface_filename: '*Q8_0.gguf'}", "{gpus: 2, vram: auto}")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert run_cli("--root", project, "models", "--stack", "demo").code == 0
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    (fit,) = [f for f in data["resource_fit"] if f["deployment"] == "fit"]
    assert (fit["gpus"], fit["min_vram_mib"]) == (2, -(-5_685_190_656 // MIB))  # the second GPU holds the output


def test_safetensors_headers_give_the_parameters_and_catch_a_truncated_file(tmp_path, hub, monkeypatch):
    project = _project(tmp_path, "{huggingface: google-bert/bert-base-uncased}", "{vram: auto}",
                       backend="Text-Embeddings-Inference\n    version: CUDA-Ampere-sm80-1.9")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    r = run_cli("--root", project, "models", "--stack", "demo")
    assert r.code == 0 and "0.41 GiB of weights, 0.11 B parameters (F32)" in r.err, r.err
    meta = yaml.safe_load((project / "stack" / "demo.models.yaml").read_text())["models"][
        "huggingface:google-bert/bert-base-uncased"]
    assert meta["parameters"] == {"F32": 110_106_428} and hub.downloads() == 0
    edit(project / "stack" / "demo.yaml", "google-bert/bert-base-uncased", "o/truncated")
    r = run_cli("--root", project, "models", "--stack", "demo")
    assert r.code == 2 and ("o/truncated/model.safetensors: its header describes 440449768 bytes but the file has "
                            "300000000; it is truncated") in r.err, r.err


def test_a_local_gguf_file_is_read_from_disk(tmp_path):
    from stack.model_metadata import from_folder

    path = tmp_path / "m.gguf"
    path.write_bytes(LLAMA)
    with open(path, "r+b") as f:
        f.truncate(BRIEF["size"])  # a hole: the weights' size without the weights
    meta = from_folder(str(path))
    assert meta.gguf.block_count == 32 and meta.weight_bytes == 8_532_934_912


def test_the_deployments_own_context_size_is_estimated_and_zero_means_the_models(tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    model = "{huggingface: bartowski/Meta-Llama-3.1-8B-Instruct-GGUF, huggingface_filename: '*Q8_0.gguf'}"
    sizes = {}
    for ctx in ("8192", "32768", "0"):
        project = _project(tmp_path / ctx, model, "{gpus: auto}")
        edit(project / "stack" / "demo.yaml", "    resources: {gpus: auto}\n",
             f"    resources: {{gpus: auto}}\n    backend_parameters: [--ctx-size={ctx}]\n")
        assert run_cli("--root", project, "models", "--stack", "demo").code == 0
        r = run_cli("--root", project, "plan", "--stack", "demo", "--json")
        (fit,) = [f for f in json.loads(r.out)["resource_fit"] if f["deployment"] == "fit"]
        assert "GPUStack's default" not in fit["estimate"]
        sizes[ctx] = fit["min_vram_mib"]
    assert sizes["8192"] == -(-10_195_673_088 // MIB)  # as with GPUStack's default
    assert sizes["32768"] == -(-15_178_506_240 // MIB)  # gguf-parser's figure for --ctx-size 32768
    assert sizes["0"] > sizes["32768"]  # the file's own 131072 tokens


def _split_brief(brief: dict, part: int, parts: int) -> dict:
    """One part of the brief's file split as llama.cpp's gguf-split writes it: the metadata in the first
    part, each part's tensors with offsets from its own data section."""
    tensors = brief["tensorInfos"]
    share = -(-len(tensors) // parts)
    mine = tensors[part * share:(part + 1) * share]
    base = mine[0]["offset"]
    infos = [{**t, "offset": t["offset"] - base} for t in mine]
    kvs = brief["header"]["metadataKV"] if part == 0 else \
        [{"key": "general.architecture", "valueType": 8, "value": "llama"}]
    return {"header": {"version": 3, "tensorCount": len(infos), "metadataKVCount": len(kvs), "metadataKV": kvs},
            "tensorInfos": infos, "padding": 0}


def test_a_split_gguf_in_a_folder_is_sized_from_all_its_parts(tmp_path, monkeypatch):
    names = [f"Q8_0/Meta-Llama-3.1-8B-Instruct-Q8_0-0000{i}-of-00002.gguf" for i in (1, 2)]
    parts = []
    for i in range(2):
        raw = header_bytes(_split_brief(BRIEF, i, 2))
        parts.append(raw + b"\0" * (-len(raw) % 32))
    repo = Repo({names[0]: parts[0], names[1]: parts[1], "README.md": b"#"})
    with HubServer({"o/split": repo}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        project = _project(tmp_path, "{huggingface: o/split, huggingface_filename: '*Q8_0-00001-of-00002.gguf'}",
                           "{gpus: auto}")
        r = run_cli("--root", project, "models", "--stack", "demo")
        assert r.code == 0, r.err
        assert server.requests[("RANGE", "/o/split/resolve/main/" + names[1])]  # the second part was read
    meta = yaml.safe_load((project / "stack" / "demo.models.yaml").read_text())["models"][
        "huggingface:o/split:*Q8_0-00001-of-00002.gguf"]
    whole = facts([gguf_header.read_header(reader(LLAMA), "whole")])
    assert meta["gguf"]["layer_bytes"] == whole["layer_bytes"] and meta["gguf"]["parameters"] == 8_030_261_312
    assert vram_per_gpu(meta["gguf"], [1]) == vram_per_gpu(whole, [1])


def test_modelscope_models_are_read_through_the_endpoints_its_sdk_calls(tmp_path, monkeypatch):
    """ModelScope: the listing (HubApi.get_model_files) and range reads of the files, as on the Hub."""
    repos = {"google-bert/bert-base-uncased": Repo(
                 {"model.safetensors": BERT, "config.json": json.dumps({"num_attention_heads": 12,
                                                                         "vocab_size": 30522}).encode()},
                 sizes={"model.safetensors": 440_449_768}),
             "bartowski/Llama-GGUF": Repo({"Q8_0/Meta-Llama-3.1-8B-Instruct-Q8_0.gguf": LLAMA, "README.md": b"#"},
                                          sizes={"Q8_0/Meta-Llama-3.1-8B-Instruct-Q8_0.gguf": BRIEF["size"]})}
    with HubServer(repos) as server:
        monkeypatch.setenv("MODELSCOPE_DOMAIN", server.url)  # the SDK's variable; a scheme in it is kept
        project = _project(tmp_path / "a", "{modelscope: google-bert/bert-base-uncased}", "{vram: auto}",
                           backend="Text-Embeddings-Inference\n    version: CUDA-Ampere-sm80-1.9")
        r = run_cli("--root", project, "models", "--stack", "demo")
        assert r.code == 0 and "0.11 B parameters (F32)" in r.err, r.err
        project = _project(tmp_path / "b", "{modelscope: bartowski/Llama-GGUF, model_scope_file_path: '*Q8_0.gguf'}",
                           "{gpus: auto}")
        r = run_cli("--root", project, "models", "--stack", "demo")
        assert r.code == 0 and "GGUF llama: 32 layers" in r.err, r.err
        assert server.downloads() == 0 and server.requests[("GET", "/api/v1/models/bartowski/Llama-GGUF/repo/files")]
    data = json.loads(run_cli("--root", project, "plan", "--stack", "demo", "--json").out)
    (fit,) = [f for f in data["resource_fit"] if f["deployment"] == "fit"]
    assert fit["min_vram_mib"] == -(-10_195_673_088 // MIB)  # the same estimate as from the Hub
