"""Read what resource fit needs of a model: its weight files' sizes and its config.json.

From the Hub (or a mirror: ``HF_ENDPOINT``): the repository's root listing
(``GET /api/models/<repo>/tree/main``, what GPUStack's ``list_repo(root_dir_only=True)`` reads) and
the head of config.json by an HTTP range read (``Range: bytes=0-262143``), never the weights. From a
local model folder: the files' sizes and config.json on this machine. Used by ``gpufleet models``,
which writes ``stack/<stack>.models.yaml``; plans read that file and never the network.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from .resource_fit import ModelMeta, weight_bytes
from .schema import ModelSource

CONFIG_BYTES = 256 * 1024
TIMEOUT_S = 15  # GPUStack's timeout for the same lookups (estimate_model_vram)


class MetadataError(Exception):
    """The metadata could not be read; the message says why and what to do."""


def _get(url: str, token: str | None, headers: dict | None = None) -> bytes:
    request = urllib.request.Request(url, headers={**(headers or {}),
                                                   **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.read(CONFIG_BYTES + 1)
    except urllib.error.HTTPError as err:
        code = err.headers.get("X-Error-Code", "")
        if code == "GatedRepo" or err.code in (401, 403):
            raise MetadataError(f"{url}: {err.code} {code or err.reason}; set HF_TOKEN to a token with access") \
                from None
        raise MetadataError(f"{url}: {err.code} {code or err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise MetadataError(f"{url}: {reason} (is the Hub reachable? set HF_ENDPOINT for a mirror)") from None


def _config_fields(data: dict) -> dict:
    text = data.get("text_config")
    if isinstance(text, dict) and "num_attention_heads" in text:  # get_hf_text_config
        data = text
    out = {}
    for key in ("num_attention_heads", "vocab_size"):
        if isinstance(data.get(key), int) and data[key] > 0:
            out[key] = data[key]
    return out


def from_hub(source: ModelSource, endpoint: str, token: str | None) -> ModelMeta:
    if source.kind != "huggingface":
        raise MetadataError(f"{source.ref}: only Hugging Face repositories are read here; for ModelScope "
                            "write the entry yourself (weight_bytes, num_attention_heads)")
    base = endpoint.rstrip("/")
    listing = json.loads(_get(f"{base}/api/models/{source.ref}/tree/main", token))
    files = {e["path"]: int(e.get("size") or 0) for e in listing if e.get("type") == "file"}
    if source.filename:
        import fnmatch
        chosen = sorted(n for n in files if fnmatch.fnmatch(n, source.filename))
        if not chosen:
            raise MetadataError(f"no file in {source.ref} matches {source.filename!r}")
        weights = sum(files[n] for n in chosen)
    else:
        weights = weight_bytes(files)
    fields = {}
    if "config.json" in files:
        head = _get(f"{base}/{source.ref}/resolve/main/config.json", token,
                    {"Range": f"bytes=0-{CONFIG_BYTES - 1}"})
        try:
            fields = _config_fields(json.loads(head[:CONFIG_BYTES]))
        except ValueError:
            raise MetadataError(f"{source.ref}: config.json is not JSON (or longer than {CONFIG_BYTES} bytes)") \
                from None
    return ModelMeta(weight_bytes=weights, source=f"{base}/api/models/{source.ref}/tree/main", **fields)


def from_folder(path: str) -> ModelMeta:
    folder = Path(path)
    if folder.is_file():
        return ModelMeta(weight_bytes=folder.stat().st_size, source=str(folder))
    if not folder.is_dir():
        raise MetadataError(f"{path} is not on this machine; run gpufleet models where the model is, or write "
                            "the entry yourself (weight_bytes, num_attention_heads)")
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    fields = {}
    if (folder / "config.json").is_file():
        try:
            fields = _config_fields(json.loads((folder / "config.json").read_text()))
        except (ValueError, OSError):
            pass
    return ModelMeta(weight_bytes=weight_bytes(files), source=str(folder), **fields)


def read(source: ModelSource, endpoint: str | None = None, token: str | None = None) -> ModelMeta:
    if source.kind == "local":
        return from_folder(source.ref)
    return from_hub(source, endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co",
                    token or os.environ.get("HF_TOKEN"))
