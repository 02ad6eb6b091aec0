"""The inventory file (``inventory/<env>.yaml``): which servers, how to reach them, what they hold.

Written by ops and by ``gpufleet discover``; every key is checked (``extra="forbid"``).
"""
from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import BeforeValidator, Field, field_validator, model_validator

from documents.fields import (
    PORT_RANGE_SCHEMA,
    SECRET_REF,
    SIZE_SCHEMA,
    Address,
    FilePath,
    HostFolder,
    PlainText,
    StrictModel,
    StrMap,
    UserName,
)

from .sizes import parse_mib
from .vendors import VENDOR_NAMES, VendorName

_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?\Z")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?\Z")


def parse_port_range(value: object) -> tuple[int, int]:
    if isinstance(value, str):
        m = re.match(r"^\s*(\d+)\s*-\s*(\d+)\s*\Z", value)
        if not m:
            raise ValueError(f"'{value}' is not a port range; write it as START-END, e.g. 40000-40063")
        start, end = int(m.group(1)), int(m.group(2))
    elif isinstance(value, dict) and set(value) == {"start", "end"} and all(
            isinstance(value[k], int) and not isinstance(value[k], bool) for k in value):
        start, end = value["start"], value["end"]
    else:
        raise ValueError("a port range is 'START-END' (e.g. 40000-40063) or {start: 40000, end: 40063}")
    if not (1024 <= start <= end <= 65535):
        raise ValueError(f"port range {start}-{end} must lie within 1024-65535 with start <= end")
    return start, end



#: ``START-END`` or ``{start, end}``: the ports replicas on a host may use
PortRange = Annotated[tuple[int, int], BeforeValidator(parse_port_range), PORT_RANGE_SCHEMA]

class SshSettings(StrictModel):
    user: Optional[UserName] = None
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    identity_file: Optional[FilePath] = None
    known_hosts: Optional[FilePath] = None


_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\Z")
_RENDER = re.compile(r"^renderD(1[2-9][0-9]|2[0-5][0-9])\Z")


#: device indices run from 0 to this (nvidia-smi, rocm-smi and npu-smi number far fewer)
MAX_DEVICE_INDEX = 1023


class DeviceEntry(StrictModel):
    index: int = Field(ge=0, le=MAX_DEVICE_INDEX)
    uuid: Optional[PlainText] = None
    #: AMD/Hygon: where the device is, so its node is found however /dev/dri is numbered
    pci_bus_id: Optional[str] = None
    render_node: Optional[str] = None

    @field_validator("pci_bus_id")
    @classmethod
    def _pci(cls, value):
        if value is not None and not _PCI.match(value.lower()):
            raise ValueError(f"'{value}' is not a PCI bus id; write it as rocm-smi --showbus prints it, e.g. "
                             "0000:c1:00.0")
        return value.lower() if value else value

    @field_validator("render_node")
    @classmethod
    def _render(cls, value):
        if value is not None and not _RENDER.match(value):
            raise ValueError(f"'{value}' is not a render node; write e.g. renderD129 (ls /dev/dri)")
        return value


class AcceleratorGroup(StrictModel):
    """A set of identical devices on one host."""

    vendor: VendorName
    model: PlainText = Field(min_length=1)
    vram: Annotated[int, SIZE_SCHEMA]  # MiB
    count: Optional[int] = Field(default=None, ge=1, le=64)
    indices: Optional[list[int]] = None
    devices: Optional[list[DeviceEntry]] = None

    @field_validator("vram", mode="before")
    @classmethod
    def _size(cls, value):
        return parse_mib(value)

    @field_validator("indices")
    @classmethod
    def _indices(cls, value):
        if value is not None:
            if not value:
                raise ValueError("indices is empty; list the device indices, e.g. [0, 1]")
            if any(i < 0 or i > MAX_DEVICE_INDEX for i in value):
                raise ValueError(f"device indices are between 0 and {MAX_DEVICE_INDEX}")
        return value

    @model_validator(mode="after")
    def _one_way(self):
        given = [k for k in ("count", "indices", "devices") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of count, indices or devices for an accelerator group"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.devices is not None and not self.devices:
            raise ValueError("devices is empty; list {index, uuid} entries or use count")
        return self

    def entries(self, first_index: int = 0) -> list[tuple[int, str | None, str | None, str | None]]:
        """The group's devices as (index, uuid, PCI bus id, render node); ``count`` numbers them from
        ``first_index``. Plain tuples: every field was validated (what a count numbers is checked by the
        caller, which knows what ``first_index`` follows), and a fleet has thousands of devices."""
        if self.devices is not None:
            return [(d.index, d.uuid, d.pci_bus_id, d.render_node) for d in self.devices]
        if self.indices is not None:
            return [(i, None, None, None) for i in self.indices]
        return [(first_index + i, None, None, None) for i in range(self.count or 0)]


_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?\Z", re.IGNORECASE)


class RegistryLogin(StrictModel):
    """Credentials each host's Docker engine uses to pull from one registry."""

    address: str
    username: UserName | PlainText
    #: secret:NAME, NAME a Pulumi config key set with `pulumi config set --secret NAME …`
    password: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _REGISTRY.match(value):
            raise ValueError(f"registry address '{value}' must be a host name with an optional port, e.g. "
                             "registry.example.com or registry.example.com:5000")
        return value

    @field_validator("password")
    @classmethod
    def _secret(cls, value: str) -> str:
        if not SECRET_REF.match(value):
            raise ValueError("a registry password is written secret:NAME (a Pulumi config secret), never in the "
                             "inventory; run `pulumi config set --secret NAME …`")
        return value


class Reserved(StrictModel):
    """What the system keeps of a host: placement never gives it to replicas."""

    cpus: float = Field(default=0, ge=0, le=4096)
    ram: Annotated[int, SIZE_SCHEMA] = 0

    @field_validator("ram", mode="before")
    @classmethod
    def _ram(cls, value):
        return parse_mib(value) if value else 0


class HostEntry(StrictModel):
    name: str
    address: Address
    ssh: SshSettings = Field(default_factory=SshSettings)
    labels: StrMap = Field(default_factory=dict)
    state: Literal["active", "cordoned"] = "active"
    port_range: Optional[PortRange] = None
    model_cache: Optional[HostFolder] = None
    #: folders under which a deployment's local_path may lie (default: the model cache)
    model_roots: Optional[list[HostFolder]] = None
    #: registry logins for this host (replace the defaults' list)
    registries: Optional[list[RegistryLogin]] = None
    #: the host's CPUs and memory (`gpufleet discover` and `probe` read them)
    cpus: Optional[int] = Field(default=None, ge=1, le=4096)
    ram: Optional[Annotated[int, SIZE_SCHEMA]] = None
    #: kept for the system (replaces the defaults' reserved); placement counts cpus - reserved
    reserved: Optional[Reserved] = None
    accelerators: list[AcceleratorGroup] = Field(default_factory=list)

    @field_validator("ram", mode="before")
    @classmethod
    def _ram(cls, value):
        return None if value is None else parse_mib(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"host name '{value}' must be lowercase letters, digits, '-' or '.', "
                             "starting and ending with a letter or digit (it becomes part of resource names)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict) -> dict:
        for key in value:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"label key '{key}' must be letters, digits, '.', '_', '-' or '/'")
        return value


class Defaults(StrictModel):
    ssh: SshSettings = Field(default_factory=SshSettings)
    port_range: PortRange = (40000, 40063)
    model_cache: HostFolder = "/var/lib/gpufleet/models"
    model_roots: Optional[list[HostFolder]] = None
    labels: StrMap = Field(default_factory=dict)
    registries: list[RegistryLogin] = Field(default_factory=list)
    #: kept for the system on every host that declares cpus or ram
    reserved: Reserved = Field(default_factory=Reserved)


class InventoryFile(StrictModel):
    defaults: Defaults = Field(default_factory=Defaults)
    hosts: list[HostEntry]

    @field_validator("hosts")
    @classmethod
    def _some(cls, value):
        if not value:
            raise ValueError("no hosts: list at least one host with name and address")
        return value


__all__ = ["InventoryFile", "HostEntry", "AcceleratorGroup", "Defaults", "SshSettings", "VENDOR_NAMES",
           "parse_port_range"]
