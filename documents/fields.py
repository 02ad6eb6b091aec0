"""Field types shared by the three user-written formats (backend specs, inventories, stack files).

Each is an ``Annotated`` pydantic type, so a rule lives in one place and every file that uses
it reports it the same way.
"""
from __future__ import annotations

import re
from typing import Annotated, Optional

from pydantic import AfterValidator, BeforeValidator

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEALTH_PATH = re.compile(r"^/[A-Za-z0-9._~/?=&%+-]*$")


def empty_if_none(value):
    """``env:`` with nothing after it is an empty mapping, as GPUStack's forms produce."""
    return {} if value is None else value


def _env_names(env: dict[str, str]) -> dict[str, str]:
    for key in env:
        if not _ENV_NAME.match(key):
            raise ValueError(f"'{key}' is not a valid environment variable name (letters, digits, _; "
                             "not starting with a digit)")
    return env


def _health_path(value: Optional[str]) -> Optional[str]:
    """It ends up in the container's health check command: URL path characters only."""
    if value is not None:
        value = value.strip()
        if not _HEALTH_PATH.match(value):
            raise ValueError(f"health_check_path '{value}' must be a URL path starting with '/' (letters, digits, "
                             "and . _ ~ / ? = & % + -), e.g. /v1/models")
    return value


EnvMap = Annotated[dict[str, str], BeforeValidator(empty_if_none), AfterValidator(_env_names)]
StrMap = Annotated[dict[str, str], BeforeValidator(empty_if_none)]
HealthPath = Annotated[str, AfterValidator(_health_path)]
