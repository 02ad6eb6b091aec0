"""The stack file (``stack/<stack>.yaml``): which models run, how many, on what.

Edited by ML engineers through pull requests; every key is checked (``extra="forbid"``).
"""
from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import (
    BeforeValidator,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from documents.fields import (
    DURATION_SCHEMA,
    SECRET_REF,
    SIZE_SCHEMA,
    AbsolutePath,
    CommandText,
    EnvMap,
    FilePath,
    HealthPath,
    ImageName,
    ParameterText,
    PlainText,
    StrictModel,
    StrMap,
    blank_is_none,
    empty_if_none,
)
from inventory.sizes import parse_mib
from inventory.vendors import VendorName

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h)?\s*\Z")


def parse_seconds(value: object) -> int:
    """``600``, ``600s``, ``10m``, ``1h`` -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 7 * 24 * 3600:
        return value
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and int(m.group(1)) > 0 and len(m.group(1)) <= 9:
            seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
            if seconds <= 7 * 24 * 3600:
                return seconds
            raise ValueError(f"'{value}' is longer than 7 days; write e.g. 600s, 10m or 1h")
    raise ValueError(f"'{value}' is not a duration; write e.g. 600s, 10m or 1h")


#: seconds, written 600, 600s, 10m or 1h
Duration = Annotated[int, DURATION_SCHEMA, BeforeValidator(parse_seconds)]


_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?\Z")


class ModelSource(StrictModel):
    """Exactly one of: a Hugging Face repo id, a ModelScope id, or a path on the host."""

    #: how to write it, for a value of the wrong shape (documents.validation reads this)
    shape_hint: ClassVar[str] = "write {huggingface: ORG/NAME}, {modelscope: ORG/NAME} or {local_path: /abs/path}"

    huggingface: Optional[PlainText] = None
    #: GPUStack's huggingface_filename: one file of the repository, or a glob (GGUF quantisations),
    #: fetched alone; the model path is then the first matching file (sorted), as in GPUStack
    huggingface_filename: Optional[PlainText] = None
    modelscope: Optional[PlainText] = None
    #: GPUStack's model_scope_file_path: the same for a ModelScope repository
    model_scope_file_path: Optional[PlainText] = None
    local_path: Optional[AbsolutePath] = None

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("huggingface", "modelscope", "local_path") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one model source: huggingface: ORG/NAME, modelscope: ORG/NAME or "
                             "local_path: /abs/path" + (f" (got {', '.join(given)})" if given else ""))
        for repo in (self.huggingface, self.modelscope):
            if repo is not None and not _REPO_ID.match(repo):
                raise ValueError(f"'{repo}' is not a repository id; write ORG/NAME, e.g. Qwen/Qwen3-8B")
        for key, repo in (("huggingface_filename", self.huggingface), ("model_scope_file_path", self.modelscope)):
            pattern = getattr(self, key)
            if pattern is None:
                continue
            if repo is None:
                source = "huggingface" if key == "huggingface_filename" else "modelscope"
                raise ValueError(f"{key} goes with {source}: ORG/NAME; remove it or name the repository")
            if pattern.startswith("/") or ".." in pattern.split("/") or not pattern.strip():
                raise ValueError(f"{key} '{pattern}' must be a file (or glob) inside the repository, "
                                 "e.g. '*Q4_K_M*.gguf'")
        return self

    @property
    def filename(self) -> str | None:
        """The file or glob to fetch alone, or None for the whole repository."""
        return self.huggingface_filename or self.model_scope_file_path

    @property
    def kind(self) -> str:
        return "huggingface" if self.huggingface else "modelscope" if self.modelscope else "local"

    @property
    def ref(self) -> str:
        return self.huggingface or self.modelscope or self.local_path or ""


class Resources(StrictModel):
    #: a count, or auto: as few whole GPUs as hold the model (stack.resource_fit)
    gpus: Annotated[Union[int, Literal["auto"]], WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 64}, {"const": "auto"}],
        "description": "a GPU count, or auto (sized from the model)"})] = 1
    #: VRAM per GPU: a size (devices may be shared while the sum fits), 'whole' (exclusive), or auto
    #: (whole GPUs big enough for the model, sized from its metadata)
    vram: Annotated[Union[int, Literal["whole", "auto"]], WithJsonSchema({"anyOf": [
        SIZE_SCHEMA.json_schema, {"const": "whole"}, {"const": "auto"}],
        "description": "VRAM per GPU: a size (shared), whole, or auto"})] = "whole"
    #: with vram: whole, the smallest device that will do
    min_vram: Optional[Annotated[int, SIZE_SCHEMA]] = None
    ram: Optional[Annotated[int, SIZE_SCHEMA]] = None
    cpus: Optional[float] = Field(default=None, gt=0)
    shm: Annotated[int, SIZE_SCHEMA] = 16 * 1024
    #: a sized vram claim is enforced on the engine (its memory fraction is set), or only advisory
    share: Literal["enforced", "advisory"] = "enforced"

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value):
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
            raise ValueError(f"must be a GPU count from 0 to 64, or auto; got {value!r}")
        return value

    @field_validator("vram", mode="before")
    @classmethod
    def _vram(cls, value):
        if value in ("whole", "auto"):
            return value
        try:
            return parse_mib(value)
        except ValueError as err:
            raise ValueError(f"{err}; or 'whole' for exclusive use of each GPU") from None

    @field_validator("min_vram", "ram", "shm", mode="before")
    @classmethod
    def _size(cls, value):
        return None if value is None else parse_mib(value)

    @model_validator(mode="after")
    def _consistent(self):
        if self.min_vram is not None and self.vram != "whole":
            raise ValueError("min_vram goes with vram: whole; with a vram size the size is the minimum")
        if self.gpus == "auto" and self.vram not in ("whole", "auto"):
            raise ValueError("gpus: auto sizes whole GPUs from the model; leave vram out or write vram: auto")
        if self.auto and self.min_vram is not None:
            raise ValueError("with auto, the model's size decides the device size; remove min_vram")
        if self.vram == "auto" and self.gpus == 0:
            raise ValueError("vram: auto needs GPUs; set gpus to 1 or more, or auto")
        return self

    @property
    def auto(self) -> bool:
        """Sized from the model's metadata (stack.resource_fit)."""
        return self.gpus == "auto" or self.vram == "auto"

    @property
    def gpu_count(self) -> int:
        """The count to check backends and selections against: auto means at least one."""
        return 1 if self.gpus == "auto" else self.gpus


class Selectors(StrictModel):
    labels: StrMap = Field(default_factory=dict)
    vendor: Optional[VendorName] = None
    #: glob on the inventory's model name, e.g. '*H100*', or a list of globs any of which may match
    #: (['*H100*', '*H200*'])
    gpu_model: Optional[Union[str, list[str]]] = None

    @field_validator("gpu_model", mode="before")
    @classmethod
    def _globs(cls, v):
        """One message for what is neither a glob nor a list of globs (the union would give one per branch)."""
        if v is None:
            return v
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("an empty glob matches no GPU; write one such as '*H100*', or leave gpu_model out")
            return v
        if isinstance(v, list):
            if not v:
                raise ValueError("an empty list matches no GPU; leave gpu_model out to allow any model")
            for i, g in enumerate(v):
                if not isinstance(g, str) or not g.strip():
                    raise ValueError(f"entry {i} (from 0) must be a glob such as '*H100*', not {g!r}")
            return v
        raise ValueError(f"must be a glob such as '*H100*', or a list of them, not {v!r}")


class Deployment(StrictModel):
    backend: str = Field(min_length=1)
    version: Optional[str] = None
    model: ModelSource
    model_name: Optional[PlainText] = None
    replicas: int = Field(default=1, ge=0, le=1000)
    resources: Resources = Field(default_factory=Resources)
    selectors: Selectors = Field(default_factory=Selectors)
    #: manual GPU selection: 'host:index' entries; replicas take their GPUs from these only
    gpu_selection: Optional[list[str]] = None
    #: 'hosts' makes replicas of this deployment never share a host (soft otherwise)
    spread: Literal["soft", "hosts"] = "soft"
    env: EnvMap = Field(default_factory=dict)
    backend_parameters: list[ParameterText] = Field(default_factory=list)
    #: backend default parameters this deployment does not want, by flag (e.g. --trust-remote-code)
    drop_default_parameters: list[ParameterText] = Field(default_factory=list)
    image: Annotated[Optional[ImageName], BeforeValidator(blank_is_none)] = None
    run_command: CommandText = None
    entrypoint: CommandText = None
    health_check_path: Optional[HealthPath] = None

    @field_validator("env")
    @classmethod
    def _secrets(cls, value: dict) -> dict:
        for key, val in value.items():
            if val.startswith("secret:") and not SECRET_REF.match(val):
                raise ValueError(f"{key}: '{val}' must be secret:NAME, NAME being a Pulumi config key")
        return value

    @field_validator("gpu_selection")
    @classmethod
    def _selection(cls, value):
        if value is None:
            return value
        if not value:
            raise ValueError("gpu_selection is empty; list 'host:index' entries or remove it")
        for item in value:
            if not re.match(r"^[a-z0-9][a-z0-9.-]*:\d+\Z", item):
                raise ValueError(f"'{item}' is not host:index, e.g. gpu-a1:0")
        if len(set(value)) != len(value):
            raise ValueError("gpu_selection lists a GPU twice")
        return value


class Health(StrictModel):
    #: wait for the container to report healthy before `pulumi up` moves on
    wait: bool = True
    timeout: Duration = 900
    interval: Duration = 15
    retries: int = 3
    start_period: Duration = 600


class Rollout(StrictModel):
    """How `pulumi up` replaces the running replicas of one deployment."""

    #: replicas of one deployment replaced at a time (the next waits for these to turn healthy)
    max_unavailable: int = Field(default=1, ge=1, le=1000)
    #: time a container gets to stop (SIGTERM, then SIGKILL) before it is deleted
    stop_grace: Duration = 30


_LOG_SIZE = re.compile(r"^[1-9][0-9]{0,5}[kmg]\Z")


class Logs(StrictModel):
    """Docker's json-file rotation on every container: an engine's logs must not fill the disk."""

    max_size: str = "100m"
    max_file: int = Field(default=5, ge=1, le=100)

    @field_validator("max_size", mode="before")
    @classmethod
    def _size(cls, value):
        if not isinstance(value, str) or not _LOG_SIZE.match(value):
            raise ValueError(f"{value!r} is not a log size; write e.g. 100m, 512k or 1g (Docker's units)")
        return value


class Images(StrictModel):
    #: how long pulling one image may take (engine images are 10-30 GB)
    pull_timeout: Duration = 3600


class ModelFetch(StrictModel):
    """How hosts get the models: a one-shot container per (host, model) before its replicas start."""

    #: an image with python3 and huggingface_hub / modelscope; GPUStack's own image has both
    image: ImageName = "gpustack/gpustack:v2.2.3"
    #: how long one fetch may take (separate from the health wait; a 140 GB model takes a while)
    timeout: Duration = 4 * 3600
    #: a Hugging Face mirror or proxy (HF_ENDPOINT), e.g. https://hf-mirror.com
    hf_endpoint: Optional[PlainText] = None
    #: the Hub token for gated and private models: secret:NAME, NAME a Pulumi config key
    hf_token: Optional[PlainText] = None
    #: ModelScope's site (MODELSCOPE_DOMAIN), e.g. www.modelscope.ai
    modelscope_domain: Optional[PlainText] = None
    #: files fetched at once per model
    max_workers: int = Field(default=8, ge=1, le=64)

    @field_validator("hf_token")
    @classmethod
    def _token(cls, value):
        if value is not None and not SECRET_REF.match(value):
            raise ValueError(f"'{value[:6]}…' must be secret:NAME, NAME being a Pulumi config key "
                             "(pulumi config set --secret NAME hf_…); a token never goes in a file")
        return value

    @field_validator("hf_endpoint")
    @classmethod
    def _endpoint(cls, value):
        if value is not None and not re.match(r"^https?://[^\s/]+(/\S*)?\Z", value):
            raise ValueError(f"'{value}' is not an http(s) URL, e.g. https://hf-mirror.com")
        return value


class StackFile(StrictModel):
    inventory: FilePath
    strategy: Literal["binpack", "spread"] = "binpack"
    health: Health = Field(default_factory=Health)
    rollout: Rollout = Field(default_factory=Rollout)
    logs: Logs = Field(default_factory=Logs)
    images: Images = Field(default_factory=Images)
    model_fetch: ModelFetch = Field(default_factory=ModelFetch)
    deployments: Annotated[dict[str, Deployment], BeforeValidator(empty_if_none)] = Field(default_factory=dict)
