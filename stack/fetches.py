"""Model fetches: before a replica starts, its host has the model in its model cache.

One fetch per (host, model source, file): a one-shot container of the stack's fetch image that runs
``stack/fetch_script.py`` (huggingface_hub or modelscope, as GPUStack's worker downloads). Where
the model lands follows GPUStack (``gpustack/worker/downloaders.py``): ``<cache>/huggingface/
<owner>/<name>`` and ``<cache>/model_scope/<owner>/<name>``, a repository id without an owner
going under ModelScope's default group (``model_id_to_group_owner_name``). ``{{model_path}}`` is
that folder, or the file when ``huggingface_filename`` names one; a glob resolves to the first
matching file, known once the fetch has listed the repository (``model_path`` is None here then).

Plain data: ``components.model_fetch`` runs it over SSH during `pulumi up`, the tests run it on
real test hosts.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

from backends.render import SECRET_PREFIX
from inventory.fleet import Host

from .schema import ModelFetch, ModelSource

#: ModelScope's DEFAULT_MODELSCOPE_GROUP, used by model_id_to_group_owner_name for an id without '/'
DEFAULT_GROUP = "damo"
SCRIPT = (Path(__file__).parent / "fetch_script.py").read_text()
_GLOB = set("*?[")


@dataclass(frozen=True)
class FetchSpec:
    host: str
    source: str  # huggingface | modelscope
    repo: str
    filename: str | None
    cache: str  # the host's model cache, mounted at the same path
    local_dir: str
    #: the path the engine gets, or None when a glob is resolved by the fetch
    model_path: str | None
    image: str
    env: tuple[tuple[str, str], ...]
    secret_env: tuple[tuple[str, str], ...]  # (variable, Pulumi config key)
    timeout_s: int
    max_workers: int

    @classmethod
    def from_props(cls, props: dict) -> "FetchSpec":
        """From a resource's inputs as Pulumi hands them back: lists for tuples, and keys whose value
        was None left out (the SDK does not send them)."""
        out = {name: props.get(name) for name in cls.__dataclass_fields__}
        for name in ("env", "secret_env"):
            out[name] = tuple(tuple(pair) for pair in out[name] or ())
        return cls(**out)

    @property
    def key(self) -> str:
        """Stable and unique per host: what the fetch resource and its container are named after."""
        return f"{self.host}/{self.source}:{self.repo}" + (f":{self.filename}" if self.filename else "")

    @property
    def container_name(self) -> str:
        return "gpufleet-fetch-" + hashlib.sha256(self.key.encode()).hexdigest()[:16]

    def job(self, progress_s: int = 10) -> str:
        """The script's argument: no secrets."""
        return json.dumps(dict(source=self.source, repo=self.repo, filename=self.filename,
                               local_dir=self.local_dir, max_workers=self.max_workers, progress_s=progress_s),
                          sort_keys=True)

    def docker_run(self, progress_s: int = 10) -> list[str]:
        """``docker run`` on the host; secret variables are read from ``--env-file /dev/stdin``."""
        argv = ["docker", "run", "--rm", "--name", self.container_name, "--network", "host",
                "--label", "gpufleet.fetch=" + self.key,
                "--volume", f"{self.cache}:{self.cache}", "--entrypoint", "python3"]
        for k, v in self.env:
            argv += ["--env", f"{k}={v}"]
        if self.secret_env:
            argv += ["--env-file", "/dev/stdin"]
        return argv + [self.image, "-c", SCRIPT, self.job(progress_s)]


def local_dir(cache: str, source: ModelSource) -> str:
    owner, _, name = source.ref.rpartition("/")
    folder = "huggingface" if source.kind == "huggingface" else "model_scope"
    return posixpath.join(cache, folder, owner or DEFAULT_GROUP, name)


def is_glob(filename: str | None) -> bool:
    return bool(filename) and bool(_GLOB & set(filename))


def render_fetch(host: Host, source: ModelSource, settings: ModelFetch) -> FetchSpec | None:
    """The fetch a replica of ``source`` needs on ``host``; None for a local path (nothing to fetch)."""
    if source.kind == "local":
        return None
    folder = local_dir(host.model_cache, source)
    filename = source.filename
    path = folder if not filename else None if is_glob(filename) else posixpath.join(folder, filename)
    env: list[tuple[str, str]] = [("HF_HUB_DISABLE_TELEMETRY", "1")]
    secrets: list[tuple[str, str]] = []
    if source.kind == "huggingface":
        if settings.hf_endpoint:
            env.append(("HF_ENDPOINT", settings.hf_endpoint))
        if settings.hf_token:
            secrets.append(("HF_TOKEN", settings.hf_token[len(SECRET_PREFIX):]))
    elif settings.modelscope_domain:
        env.append(("MODELSCOPE_DOMAIN", settings.modelscope_domain))
    return FetchSpec(host=host.name, source=source.kind, repo=source.ref, filename=filename,
                     cache=host.model_cache, local_dir=folder, model_path=path, image=settings.image,
                     env=tuple(sorted(env)), secret_env=tuple(secrets), timeout_s=settings.timeout,
                     max_workers=settings.max_workers)


def pending_path(spec: FetchSpec) -> str:
    """What a plan shows for a path the fetch resolves: readable, and never a real path."""
    return f"<first file matching {spec.filename} in {spec.local_dir}>"
