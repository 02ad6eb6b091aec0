"""Read what resource fit needs of a model: its weight files' sizes, its config.json and its headers.

From the Hub (or a mirror: ``HF_ENDPOINT``): the repository's root listing
(``GET /api/models/<repo>/tree/main``, what GPUStack's ``list_repo(root_dir_only=True)`` reads), the
head of config.json by an HTTP range read (``Range: bytes=0-262143``), and by range reads the header
of every root-level safetensors file (parameters per dtype; a header whose data runs past the file's
listed size is refused) or of the GGUF file (and its splits) for gguf-parser's estimate; never the
weights. From a local model folder or .gguf file: the same read from this machine's disk. Used by
``gpufleet models``, which writes ``stack/<stack>.models.yaml``; plans read that file and never the
network.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import gguf_header, safetensors_header
from .fetch_script import derive_max_len
from .gguf_estimate import NotEstimable, facts
from .resource_fit import EXCLUDED, GGUFFacts, ModelMeta, weight_bytes
from .schema import ModelSource

CONFIG_BYTES = 256 * 1024
LISTING_BYTES = 16 * 1024 * 1024
TIMEOUT_S = 15  # GPUStack's timeout for the same lookups (estimate_model_vram)


class MetadataError(Exception):
    """The metadata could not be read; the message says why and what to do."""


def _get(url: str, token: str | None) -> bytes:
    """A file listing (at most LISTING_BYTES)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.read(LISTING_BYTES)
    except urllib.error.HTTPError as err:
        code = err.headers.get("X-Error-Code", "")
        if code == "GatedRepo" or err.code in (401, 403):
            raise MetadataError(f"{url}: {err.code} {code or err.reason}; set HF_TOKEN to a token with access") \
                from None
        raise MetadataError(f"{url}: {err.code} {code or err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise MetadataError(f"{url}: {reason} (is it reachable? HF_ENDPOINT or MODELSCOPE_DOMAIN select a mirror)") \
            from None


def _ranged(url: str, token: str | None):
    """``read(offset, length)`` over HTTP range requests; a server that ignores Range is read no further."""
    def read(offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as r:
                if r.status == 206:
                    return r.read(length)
                data = r.read(offset + length)  # 200: the whole file from byte 0
                return data[offset:offset + length]
        except urllib.error.HTTPError as err:
            if err.code == 416:  # past the end
                return b""
            raise MetadataError(f"{url}: {err.code} {err.headers.get('X-Error-Code', '') or err.reason}") from None
        except (urllib.error.URLError, OSError) as err:
            raise MetadataError(f"{url}: {getattr(err, 'reason', err)}") from None
    return read


def _file(path: str):
    """``read(offset, length)`` of a file on this machine."""
    def read(offset: int, length: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    return read


def _split_names(first: str, names) -> list[str]:
    """A split GGUF (``x-00001-of-00003.gguf``) as its parts in order; any other file alone."""
    m = re.search(r"-(\d{5})-of-(\d{5})\.gguf$", first)
    if not m:
        return [first]
    total = int(m.group(2))
    parts = [f"{first[:m.start()]}-{i:05d}-of-{m.group(2)}.gguf" for i in range(1, total + 1)]
    missing = [p for p in parts if p not in names]
    if missing:
        raise MetadataError(f"{first} is part of a split GGUF file but {missing[0]} is missing")
    return parts


def _gguf(readers: list[tuple[str, object]]) -> GGUFFacts:
    try:
        headers = [gguf_header.read_header(read, name) for name, read in readers]
        return GGUFFacts(**facts(headers))
    except gguf_header.HeaderError as err:
        raise MetadataError(str(err)) from None
    except NotEstimable as err:
        raise MetadataError(f"{readers[0][0]}: {err}; give gpus and vram instead of auto") from None


def _safetensors(readers: list[tuple[str, object, int]]) -> dict[str, int] | None:
    """Parameters per dtype over all the files' headers; each header is checked against its file's size."""
    def one(reader):
        name, read, size = reader
        try:
            return name, size, safetensors_header.read_header(read, name)
        except safetensors_header.HeaderError as err:
            raise MetadataError(str(err)) from None

    params: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:  # a 72-shard model: 144 range reads, 8 at a time
        infos = list(pool.map(one, readers))
    for name, size, info in infos:
        if size and info.file_bytes > size:
            raise MetadataError(f"{name}: its header describes {info.file_bytes} bytes but the file has {size}; "
                                "it is truncated (an incomplete upload or download)")
        for dtype, n in info.parameters.items():
            params[dtype] = params.get(dtype, 0) + n
    return params or None


def _config_fields(data: dict) -> dict:
    out = {}
    vision = data.get("vision_config")
    if isinstance(vision, dict):  # SGLang's fraction shrinks with the vision tower (stack.sglang_fraction)
        layers = vision.get("num_hidden_layers") or vision.get("depth")
        hidden = vision.get("hidden_size")
        # GPUStack's defaults where the tower does not say (24 layers of 1024)
        out["vision_layers"] = layers if isinstance(layers, int) and layers > 0 else 24
        out["vision_hidden_size"] = hidden if isinstance(hidden, int) and hidden > 0 else 1024
    max_len = derive_max_len(data)
    text = data.get("text_config")
    if isinstance(text, dict) and "num_attention_heads" in text:  # get_hf_text_config
        data = text
    for key in ("num_attention_heads", "vocab_size"):
        if isinstance(data.get(key), int) and data[key] > 0:
            out[key] = data[key]
    facts = {k: data[k] for k in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                                  "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim")
             if isinstance(data.get(k), int) and not isinstance(data.get(k), bool) and data[k] >= 0}
    hidden, heads = data.get("hidden_size"), facts.get("num_attention_heads")
    if not facts.get("head_dim") and isinstance(hidden, int) and heads:  # ModelParameters' default
        facts["head_dim"] = hidden // heads
    dtype = data.get("torch_dtype", data.get("dtype"))  # newer transformers write "dtype"
    if isinstance(dtype, str):
        facts["torch_dtype"] = dtype
    if isinstance(data.get("quantize"), str):
        facts["quantize"] = data["quantize"]
    quant = data.get("quantization_config")
    if isinstance(quant, dict) and isinstance(quant.get("kv_quant_type"), str):
        facts["kv_quant_type"] = quant["kv_quant_type"]
    if max_len is not None:
        facts["max_len"] = max_len
    if facts.get("num_hidden_layers"):
        out["text"] = facts
    return out


def from_hub(source: ModelSource, endpoint: str, token: str | None) -> ModelMeta:
    base = endpoint.rstrip("/")
    if source.filename:
        # every file of the repository, folders included, as the fetch matches them (model_info's siblings)
        info = json.loads(_get(f"{base}/api/models/{source.ref}?blobs=true", token))
        files = {s["rfilename"]: int(s.get("size") or 0) for s in info.get("siblings") or []}
    else:
        listing = json.loads(_get(f"{base}/api/models/{source.ref}/tree/main", token))
        files = {e["path"]: int(e.get("size") or 0) for e in listing if e.get("type") == "file"}
    return _from_listing(source, files, lambda name: f"{base}/{source.ref}/resolve/main/{name}", token,
                         f"{base}/api/models/{source.ref}/tree/main")


def _from_listing(source: ModelSource, files: dict[str, int], url, token: str | None, shown: str) -> ModelMeta:
    """What a hub's file listing (path -> size) and range reads of ``url(path)`` tell: GPUStack's weight
    size, the safetensors or GGUF headers, config.json's facts."""
    fields: dict = {}
    if source.filename:
        import fnmatch
        chosen = sorted(n for n in files if fnmatch.fnmatch(n, source.filename))
        if not chosen:
            raise MetadataError(f"no file in {source.ref} matches {source.filename!r}; its files: "
                                + ", ".join(sorted(files)[:12]))
        if chosen[0].endswith(".gguf"):
            chosen = _split_names(chosen[0], files)
            fields["gguf"] = _gguf([(f"{source.ref}/{n}", _ranged(url(n), token)) for n in chosen])
        weights = sum(files[n] for n in chosen)
    else:
        root = {n: size for n, size in files.items() if "/" not in n}
        weights = weight_bytes(root)
        shards = sorted(n for n in root if n.endswith(".safetensors") and n not in EXCLUDED)
        fields["parameters"] = _safetensors([(f"{source.ref}/{n}", _ranged(url(n), token), root[n])
                                             for n in shards])
    if "config.json" in files:
        head = _ranged(url("config.json"), token)(0, CONFIG_BYTES)
        try:
            fields.update(_config_fields(json.loads(head)))
        except ValueError:
            raise MetadataError(f"{source.ref}: config.json is not JSON (or longer than {CONFIG_BYTES} bytes)") \
                from None
    return ModelMeta(weight_bytes=weights, source=shown, **fields)


def from_folder(path: str) -> ModelMeta:
    folder = Path(path)
    if folder.is_file():
        gguf = None
        if folder.name.endswith(".gguf"):
            parts = _split_names(folder.name, {p.name for p in folder.parent.iterdir()})
            gguf = _gguf([(str(folder.parent / p), _file(str(folder.parent / p))) for p in parts])
        return ModelMeta(weight_bytes=folder.stat().st_size if gguf is None else gguf.weight_bytes,
                         source=str(folder), gguf=gguf)
    if not folder.is_dir():
        raise MetadataError(f"{path} is not on this machine; run gpufleet models where the model is, or write "
                            "the entry yourself (weight_bytes, num_attention_heads)")
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    fields: dict = {"parameters": _safetensors([
        (str(folder / n), _file(str(folder / n)), files[n]) for n in sorted(files)
        if n.endswith(".safetensors") and n not in EXCLUDED])}
    if (folder / "config.json").is_file():
        try:
            fields.update(_config_fields(json.loads((folder / "config.json").read_text())))
        except (ValueError, OSError):
            pass
    return ModelMeta(weight_bytes=weight_bytes(files), source=str(folder), **fields)


def from_modelscope(source: ModelSource, endpoint: str, token: str | None) -> ModelMeta:
    """The same facts from ModelScope, through the endpoints its SDK calls (``HubApi.get_model_files``:
    ``/api/v1/models/<id>/repo/files``; downloads: ``/api/v1/models/<id>/repo?FilePath=…``), by the
    rules GPUStack applies to its listing (``list_repo``: ``Path`` and ``Size``)."""
    base = endpoint.rstrip("/")
    recursive = bool(source.filename)  # a pattern is matched against every file, as the fetch does
    listing = json.loads(_get(f"{base}/api/v1/models/{source.ref}/repo/files?Revision=master&Recursive="
                              f"{'true' if recursive else 'false'}", token))
    entries = (listing.get("Data") or {}).get("Files") or [] if isinstance(listing, dict) else []
    files = {e["Path"]: int(e.get("Size") or 0) for e in entries
             if isinstance(e, dict) and e.get("Type", "blob") == "blob" and isinstance(e.get("Path"), str)}
    return _from_listing(source, files,
                         lambda name: f"{base}/api/v1/models/{source.ref}/repo?Revision=master&FilePath={name}",
                         token, f"{base}/api/v1/models/{source.ref}")


def read(source: ModelSource, endpoint: str | None = None, token: str | None = None) -> ModelMeta:
    if source.kind == "local":
        return from_folder(source.ref)
    if source.kind == "modelscope":
        # the SDK's endpoint: MODELSCOPE_DOMAIN, https:// unless it says its scheme (resolve_endpoint)
        domain = (os.environ.get("MODELSCOPE_DOMAIN") or "www.modelscope.cn").strip().rstrip("/")
        base = domain if domain.startswith(("http://", "https://")) else f"https://{domain}"
        return from_modelscope(source, endpoint or base, token or os.environ.get("MODELSCOPE_API_TOKEN"))
    return from_hub(source, endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co",
                    token or os.environ.get("HF_TOKEN"))
