"""Field types shared by the three user-written formats (backend specs, inventories, stack files).

Each is an ``Annotated`` pydantic type, so a rule lives in one place and every file that uses
it reports it the same way.  Everything that ends up in a container or on a host (images,
environment values, labels, users, paths, addresses) refuses control characters: these
files arrive by pull request, and a value must never smuggle a newline into a log or an
escape sequence into a terminal.
"""
from __future__ import annotations

import ipaddress
import posixpath
import re
import unicodedata
from typing import Annotated, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    WithJsonSchema,
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: a reference to a Pulumi secret: secret:NAME, NAME a Pulumi config key (never the value)
SECRET_REF = re.compile(r"^secret:[A-Za-z][A-Za-z0-9_.-]*\Z")
_HEALTH_PATH = re.compile(r"^/[A-Za-z0-9._~/?=&%+-]*\Z")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
#: an IPv4 address as ipaddress writes it (no leading zeros): kept as written, without parsing
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"^{_OCTET}(\.{_OCTET}){{3}}\Z")
_IMAGE = re.compile(r"^[a-z0-9]([a-z0-9._/:@-]*[A-Za-z0-9_])?\Z", re.IGNORECASE)
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?\Z", re.IGNORECASE)


class StrictModel(BaseModel):
    """A user-written mapping: unknown keys are errors (with a did-you-mean), values are frozen.

    A ``#:`` comment above a field is its description in the JSON Schema (and so in editors and
    the README's file reference): the documentation is written once, beside the field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _CREATED.append(cls)


#: every StrictModel subclass, in the order they were made (a model is made after the models it holds)
_CREATED: list[type[StrictModel]] = []
_described = False


def describe_fields() -> None:
    """Give every model's fields the ``#:`` comments above them as descriptions, for JSON Schema.

    Done when a schema is asked for, not when the models are made: reading the classes' source cost
    every command a tenth of a second at start-up. Models are rebuilt in the order they were made, so a
    model holding another embeds the described one.
    """
    global _described
    if _described:
        return
    _described = True
    for cls in _CREATED:
        for name, text in _comment_descriptions(cls).items():
            field = cls.model_fields.get(name)
            if field is not None and not field.description:
                field.description = text
        cls.model_rebuild(force=True)  # every one: a model embeds what the models it holds were when it was built


def _comment_descriptions(cls) -> dict[str, str]:
    """``#:`` comment lines directly above ``name: ...`` in the class body, by field name."""
    import inspect

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = re.match(r"^([a-z_][a-z0-9_]*)\s*:", stripped)
        if m and pending:
            out[m.group(1)] = " ".join(pending)
        pending = []
    return out


def empty_if_none(value):
    """``env:`` with nothing after it is an empty mapping, as GPUStack's forms produce."""
    return {} if value is None else value


def blank_is_none(value):
    """Folded YAML strings end in a newline; a blank string means 'not set' (GPUStack's forms do that)."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def control_character(text: str, allow: str = "") -> str | None:
    """The first control, format or separator character in ``text`` (other than ``allow``), or None."""
    if text.isprintable():  # no character of those categories (str.isprintable's 'Other' and 'Separator'): in C
        return None
    for ch in text:
        if ch not in allow and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return ch
    return None


def _refuse_controls(text: str, allow: str = "") -> str:
    ch = control_character(text, allow)
    if ch is not None:
        raise ValueError(f"contains the control character U+{ord(ch):04X}; remove it")
    return text


def _plain_text(value: str) -> str:
    return _refuse_controls(value)


def _command_text(value: Optional[str]) -> Optional[str]:
    """Commands may be folded over lines (newlines and tabs separate arguments); nothing else."""
    return None if value is None else _refuse_controls(value, allow="\n\t")


def _env_names(env: dict[str, str]) -> dict[str, str]:
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise ValueError(f"'{key}' is not a valid environment variable name (letters, digits, _; "
                             "not starting with a digit)")
        if control_character(value):
            raise ValueError(f"the value of {key} contains the control character "
                             f"U+{ord(control_character(value) or ' '):04X}; remove it")
    return env


def _str_map(values: dict[str, str]) -> dict[str, str]:
    for key, value in values.items():
        for text in (key, value):
            ch = control_character(text)
            if ch is not None:
                raise ValueError(f"'{key}' contains the control character U+{ord(ch):04X}; remove it")
    return values


def _health_path(value: Optional[str]) -> Optional[str]:
    """It ends up in the container's health check: URL path characters only."""
    if value is not None:
        value = value.strip()
        if not _HEALTH_PATH.match(value):
            raise ValueError(f"health_check_path '{value}' must be a URL path starting with '/' (letters, digits, "
                             "and . _ ~ / ? = & % + -), e.g. /v1/models")
    return value


def _image_given(value):
    if isinstance(value, str) and not value.strip():
        raise ValueError("image_name is empty; set the container image, e.g. vllm/vllm-openai:v0.11.0")
    return value.strip() if isinstance(value, str) else value


def _image(value: str) -> str:
    _refuse_controls(value)
    if any(c.isspace() for c in value):
        raise ValueError(f"image name '{value}' contains white space")
    if not _IMAGE.match(value) or len(value) > 512:
        raise ValueError(f"'{value}' is not an image reference; write e.g. vllm/vllm-openai:v0.11.0 or "
                         "registry.example.com/team/image:tag")
    return value


def _address(value: str) -> str:
    """An IP address or an RFC 1123 host name: it goes into ssh:// URLs, health checks and endpoints."""
    if _CANONICAL_IPV4.match(value):  # most inventories: str(ip_address(value)) is value itself
        return value
    _refuse_controls(value)
    text = value.strip("[]") if value.startswith("[") else value
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if any(c.isspace() for c in value) or "/" in value or "@" in value:
        raise ValueError(f"address '{value}' must be a bare IP address or DNS name (put the user under ssh.user "
                         "and the port under ssh.port)")
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_DNS_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"address '{value}' is neither an IP address nor a DNS name (letters, digits and '-' "
                         "between dots, e.g. gpu-01.example.com)")
    return value


def _user(value: str) -> str:
    if not _USER.match(value):
        raise ValueError(f"SSH user '{value}' must be a POSIX user name (letters, digits, '_', '-', '.')")
    return value


def _absolute_path(value: str) -> str:
    _refuse_controls(value)
    if not value.startswith("/"):
        raise ValueError(f"'{value}' must be an absolute path on the host, e.g. /srv/models/qwen3-8b")
    if ".." in value.split("/"):
        raise ValueError(f"'{value}' must not contain '..'; write the path it means")
    return posixpath.normpath(value)


def _file_path(value: str) -> str:
    _refuse_controls(value)
    if not value.strip():
        raise ValueError("the path is empty")
    return value


#: free text that reaches a container, a host or a log: one line, no control characters
PlainText = Annotated[str, AfterValidator(_plain_text)]
#: a run command or entrypoint template: may be folded over lines
CommandText = Annotated[Optional[str], BeforeValidator(blank_is_none), AfterValidator(_command_text)]
#: one backend parameter, e.g. "--max-model-len 8192"
ParameterText = Annotated[str, AfterValidator(_command_text)]
ImageName = Annotated[str, BeforeValidator(_image_given), AfterValidator(_image)]
EnvMap = Annotated[dict[str, str], BeforeValidator(empty_if_none), AfterValidator(_env_names)]
StrMap = Annotated[dict[str, str], BeforeValidator(empty_if_none), AfterValidator(_str_map)]
HealthPath = Annotated[str, AfterValidator(_health_path)]
Address = Annotated[str, AfterValidator(_address)]
UserName = Annotated[str, AfterValidator(_user)]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
FilePath = Annotated[str, AfterValidator(_file_path)]


#: host folders a container must never see: the host's configuration, its kernel interfaces,
#: its runtime sockets (Docker's among them) and its programs
SYSTEM_PATHS = ("/", "/etc", "/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/root", "/usr", "/bin",
                "/sbin", "/lib", "/lib64", "/var/lib/docker", "/var/lib/containerd", "/home", "/var", "/var/lib")
#: system folders whose whole subtree is off limits (the rest of SYSTEM_PATHS only as themselves)
_SYSTEM_TREES = ("/etc", "/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/root", "/usr", "/bin", "/sbin",
                 "/lib", "/lib64", "/var/lib/docker", "/var/lib/containerd")


def system_path_reason(path: str) -> str | None:
    """Why ``path`` (absolute, normalised) may not be mounted into a container, or None."""
    if path in SYSTEM_PATHS:
        return f"'{path}' is a system folder"
    for tree in _SYSTEM_TREES:
        if path.startswith(tree + "/"):
            return f"'{path}' lies in the system folder {tree}"
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".sock") or name in ("docker.sock", "containerd.sock"):
        return f"'{path}' looks like a socket"
    return None


def is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _host_folder(value: str) -> str:
    value = _absolute_path(value)
    reason = system_path_reason(value)
    if reason:
        raise ValueError(f"{reason}; a model folder must be a dedicated folder such as /srv/models")
    return value


#: a folder on a host that containers may mount: absolute, normalised, not a system folder
HostFolder = Annotated[str, AfterValidator(_host_folder)]


# ----------------------------------------------------------------------------- JSON Schema for editors

def _schema(schema: dict) -> WithJsonSchema:
    return WithJsonSchema(schema)


#: what a person writes for a size (the model keeps MiB): 80GiB, 81920MiB, 80G or a number of MiB
SIZE_SCHEMA = _schema({"anyOf": [{"type": "integer", "minimum": 1},
                                 {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(M|Mi|MiB|G|Gi|GiB|T|Ti|TiB)?\s*$"}],
                       "description": "a size: 80GiB, 81920MiB, 80G (= GiB) or a number of MiB"})
#: what a person writes for a duration (the model keeps seconds): 600, 600s, 10m, 1h
DURATION_SCHEMA = _schema({"anyOf": [{"type": "integer", "minimum": 1},
                                     {"type": "string", "pattern": r"^\s*\d+\s*(s|m|h)?\s*$"}],
                           "description": "a duration: 600s, 10m, 1h or a number of seconds"})
PORT_RANGE_SCHEMA = _schema({"anyOf": [{"type": "string", "pattern": r"^\s*\d+\s*-\s*\d+\s*$"},
                                       {"type": "object", "properties": {"start": {"type": "integer"},
                                                                         "end": {"type": "integer"}},
                                        "required": ["start", "end"], "additionalProperties": False}],
                             "description": "START-END within 1024-65535, e.g. 40000-40063"})
