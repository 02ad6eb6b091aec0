"""GPUStack's inference-backend spec, field for field (see ../shared/reference/).

Strict where a typo would silently change what runs (unknown keys are errors, with a
did-you-mean), lenient where real published specs are messy: null fields, folded strings,
``default_backend_param`` vs ``default_backend_parameters``, catalog-only keys.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from documents.fields import (
    CommandText,
    EnvMap,
    HealthPath,
    ImageName,
    ParameterText,
    PlainText,
    StrictModel,
    blank_is_none,
)

Framework = Literal["cuda", "rocm", "cann", "dtk", "musa", "corex", "maca", "neuware", "hggc", "cpu"]

#: keys GPUStack's catalog and API exports carry that say nothing about how to run a container
IGNORED_BACKEND_KEYS = frozenset({
    "is_built_in", "icon", "framework_index_map", "id", "created_at", "updated_at", "deleted_at",
    "built_in_version_configs", "enabled", "allowed_proxy_uris",
})
IGNORED_VERSION_KEYS = frozenset({"built_in_frameworks", "is_deprecated"})


class VersionConfig(StrictModel):
    """One runnable version: an image plus optional overrides of the backend defaults."""

    image_name: ImageName
    custom_framework: Framework
    run_command: CommandText = None
    entrypoint: CommandText = None
    env: EnvMap = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _drop_catalog_keys(cls, data):
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in IGNORED_VERSION_KEYS}
        return data


class BackendSpec(StrictModel):
    """A whole backend: defaults plus named versions."""

    backend_name: PlainText = Field(min_length=1)
    description: Optional[str] = None
    #: absent: built-ins use /v1/models (MindIE /info); other backends get no health check (GPUStack's is_ready)
    health_check_path: Optional[HealthPath] = None
    default_version: Optional[PlainText] = None
    default_run_command: CommandText = None
    default_entrypoint: CommandText = None
    default_env: EnvMap = Field(default_factory=dict)
    default_backend_param: list[ParameterText] = Field(default_factory=list)
    parameter_format: Optional[Literal["space", "equal"]] = None
    common_parameters: list[str] = Field(default_factory=list)
    version_configs: dict[str, VersionConfig]
    #: built-in (GPUStack core), community (GPUStack's marketplace) or custom (yours);
    #: decided from ``is_built_in`` / ``backend_source`` / where the spec was loaded from.
    backend_source: Literal["built-in", "community", "custom"] = "custom"

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data):
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "default_backend_parameters" in data:
            if "default_backend_param" in data:
                raise ValueError("both default_backend_param and default_backend_parameters are set; "
                                 "keep one (GPUStack reads default_backend_param)")
            data["default_backend_param"] = data.pop("default_backend_parameters")
        if data.get("is_built_in") is True and "backend_source" not in data:
            data["backend_source"] = "built-in"
        if data.get("backend_source") == "built_in":  # GPUStack's spelling (BackendSourceEnum.BUILT_IN)
            data["backend_source"] = "built-in"
        for key in IGNORED_BACKEND_KEYS:
            data.pop(key, None)
        for key in ("default_backend_param", "common_parameters"):
            if key in data and data[key] is None:
                data.pop(key)
        if data.get("health_check_path") is None:
            data.pop("health_check_path", None)
        return data

    @field_validator("description", "default_version", mode="before")
    @classmethod
    def _strip(cls, value):
        return blank_is_none(value)

    @field_validator("backend_name", mode="before")
    @classmethod
    def _name(cls, value):
        return value.strip() if isinstance(value, str) else value

    @field_validator("version_configs")
    @classmethod
    def _some_versions(cls, value: dict) -> dict:
        if not value:
            raise ValueError("no versions: add at least one entry with image_name and custom_framework")
        return value

    @property
    def frameworks(self) -> list[str]:
        return sorted({v.custom_framework for v in self.version_configs.values()})


def unknown_keys(data: dict) -> tuple[list[str], dict[str, list[str]]]:
    """Keys GPUStack would ignore silently: at the top, and per version. Known aliases are not unknown."""
    known = set(BackendSpec.model_fields) | IGNORED_BACKEND_KEYS | {"default_backend_parameters"}
    top = [k for k in data if isinstance(k, str) and k not in known]
    per_version: dict[str, list[str]] = {}
    versions = data.get("version_configs")
    if isinstance(versions, dict):
        vknown = set(VersionConfig.model_fields) | IGNORED_VERSION_KEYS
        for name, config in versions.items():
            if isinstance(config, dict):
                extra = [k for k in config if isinstance(k, str) and k not in vknown]
                if extra:
                    per_version[name] = extra
    return top, per_version
