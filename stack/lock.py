"""``stack/<stack>.lock.yaml``: where each replica was placed, so the next plan keeps it there.

Written by ``gpufleet lock`` (and read by ``plan`` and the Pulumi program).  The file is
deterministic: the same placement gives the same bytes.  It holds no environment and no
secret, only hosts, device indices/UUIDs, ports and demand shapes.

It is YAML with one replica per line, each a JSON flow mapping: reviewable line by line in
a pull request, and readable without PyYAML's cost (about 2.5 s for 10,000 replicas).  A
file in exactly that shape is read line by line; anything else (a hand edit, a merge)
goes through the full YAML loader, whose errors carry file:line:col.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from documents.fields import PlainText, StrictModel
from documents.problems import InputError, Problem
from documents.validation import validate
from documents.yaml_reader import Marks, path_kind, read_text, read_yaml

from .placement.model import Claim, LockedReplica, Placement, parse_replica_key

LOCK_VERSION = 1


class ClaimEntry(StrictModel):
    framework: str
    gpus: int = Field(ge=0)
    vram_mib: Union[int, Literal["whole"]]
    min_vram_mib: int = 0
    cpus: float = Field(default=0, ge=0)
    ram_mib: int = Field(default=0, ge=0)


class ReplicaEntry(StrictModel):
    host: PlainText
    vendor: Optional[PlainText] = None
    gpus: list[int] = Field(default_factory=list)
    uuids: Optional[list[Optional[PlainText]]] = None
    port: int = Field(ge=1, le=65535)
    claim: ClaimEntry

    @model_validator(mode="after")
    def _consistent(self):
        """An entry that contradicts itself is refused: it could only have been edited by hand."""
        if len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"gpus {self.gpus} names a device twice; a replica's GPUs are distinct devices "
                             "(delete the entry and run `gpufleet lock` to place it again)")
        if len(self.gpus) != self.claim.gpus:
            raise ValueError(f"gpus lists {len(self.gpus)} devices but the claim is for {self.claim.gpus}; "
                             "delete the entry and run `gpufleet lock`")
        if self.uuids is not None and len(self.uuids) != len(self.gpus):
            raise ValueError("uuids and gpus differ in length; delete the entry and run `gpufleet lock`")
        if self.gpus and self.vendor is None:
            raise ValueError("an entry with gpus needs its vendor; delete the entry and run `gpufleet lock`")
        return self


class LockFile(StrictModel):
    version: Literal[1]
    stack: PlainText
    replicas: dict[str, ReplicaEntry] = Field(default_factory=dict)
    #: replicas that left their place in the plan that wrote this lock (their containers run until the `pulumi up`
    #: applying this lock deletes them), and the claims of replicas it keeps where they are with a smaller one (the
    #: others on their devices may start before that up replaces them): so that up keeps what they hold free
    reserved: dict[str, ReplicaEntry] = Field(default_factory=dict)

    @field_validator("replicas", "reserved")
    @classmethod
    def _keys(cls, value: dict) -> dict:
        for key in value:
            parse_replica_key(key)
        return value


def lock_path(stack_file: Path) -> Path:
    return stack_file.with_name(stack_file.stem + ".lock.yaml")


_LINE = re.compile(r'^  ("(?:[^"\\]|\\.)*"): (\{.*\})$')


def _fast_parse(text: str) -> dict | None:
    """The shape ``render_lock`` writes, parsed without YAML; None for anything else."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) < 3 or lines[0] != f"version: {LOCK_VERSION}" or not lines[1].startswith("stack: "):
        return None
    try:
        out: dict = {"version": LOCK_VERSION, "stack": json.loads(lines[1][len("stack: "):])}
        section = None
        for line in lines[2:]:
            if line in ("replicas: {}", "reserved: {}") and line[:8] not in out:
                out[line[:8]] = {}
                section = None
                continue
            if line in ("replicas:", "reserved:") and line[:8] not in out:
                section = out[line[:8]] = {}
                continue
            m = _LINE.match(line)
            if m is None or section is None:
                return None
            key = json.loads(m.group(1))
            if key in section:
                return None  # let the YAML loader name both lines
            section[key] = json.loads(m.group(2))
    except ValueError:
        return None
    return out


@dataclass(frozen=True)
class Prior:
    """What a lock says: where each replica is, and what the last change left running for one more up."""

    replicas: dict[str, LockedReplica]
    reserved: tuple[LockedReplica, ...] = ()


def read_lock(path: Path, display: str | None = None, stack: str | None = None) -> dict[str, LockedReplica]:
    """The prior placement of a lock (see ``read_prior``)."""
    return read_prior(path, display, stack).replicas


def read_prior(path: Path, display: str | None = None, stack: str | None = None) -> Prior:
    """The prior placement; an absent file is an empty prior, a broken one is an InputError.

    With ``stack``, a lock written for another stack is refused: its hosts, GPUs and ports
    belong to another placement.
    """
    if path_kind(path) == "missing":
        return Prior({})
    name = display or str(path)
    lock, marks = None, Marks(name)
    fast = _fast_parse(read_text(path, name))
    if fast is not None:
        try:
            lock = LockFile.model_validate(fast)
        except (ValidationError, ValueError):
            lock = None  # re-read below for positions
    if lock is None:
        data, marks = read_yaml(path, display)
        if data is None:
            return Prior({})
        if not isinstance(data, dict):
            raise InputError([marks.problem((), "a lock file is a mapping written by `gpufleet lock`; delete it "
                                                "and run `gpufleet lock` again")])
        lock = validate(LockFile, data, marks)
    if stack is not None and lock.stack != stack:
        raise InputError([marks.problem(("stack",), f"this lock was written for stack '{lock.stack}', not "
                                                    f"'{stack}'; give this stack's own lock (stack/{stack}.lock.yaml)"
                                                    " or --no-lock to place it fresh")])
    return Prior({key: _locked(key, r) for key, r in lock.replicas.items()},
                 tuple(_locked(key, r) for key, r in sorted(lock.reserved.items())))


def _locked(key: str, r: ReplicaEntry) -> LockedReplica:
    c = r.claim
    claim = Claim(c.framework, c.gpus, None if c.vram_mib == "whole" else c.vram_mib, c.min_vram_mib, c.cpus,
                  c.ram_mib)
    uuids = tuple(r.uuids) if r.uuids else (None,) * len(r.gpus)
    return LockedReplica(key, r.host, r.vendor, tuple(r.gpus), uuids, r.port, claim)


def _entry(host: str, vendor: str | None, gpus, uuids, port: int, c: Claim) -> dict:
    entry: dict = {"host": host}
    if vendor:
        entry["vendor"] = vendor
    entry["gpus"] = list(gpus)
    if any(uuids):
        entry["uuids"] = list(uuids)
    entry["port"] = port
    claim: dict = {"framework": c.framework, "gpus": c.gpus, "vram_mib": "whole" if c.vram_mib is None else c.vram_mib}
    if c.min_vram_mib:
        claim["min_vram_mib"] = c.min_vram_mib
    if c.cpus:
        claim["cpus"] = int(c.cpus) if float(c.cpus).is_integer() else c.cpus
    if c.ram_mib:
        claim["ram_mib"] = c.ram_mib
    entry["claim"] = claim
    return entry


def render_lock(stack: str, placement: Placement) -> str:
    """The lock for a placement: its replicas, and its departing replicas as ``reserved``."""
    replicas = {a.key: _entry(a.host, a.vendor, a.gpus, a.uuids, a.port, a.claim) for a in placement.assignments}
    reserved = {d.key: _entry(d.host, d.vendor, d.gpus, d.uuids, d.port, d.claim) for d in placement.departing}
    lines = [f"# Placement lock for stack '{stack}', written by `gpufleet lock --stack {stack}`.",
             "# Each replica stays where this says while it still fits; review changes like code.",
             f"version: {LOCK_VERSION}", f"stack: {json.dumps(stack)}"]
    for name, section in (("replicas", replicas), ("reserved", reserved)):
        if section:
            lines.append(f"{name}:")
            lines += [f"  {json.dumps(key)}: {json.dumps(entry, separators=(', ', ': '))}"
                      for key, entry in section.items()]
        elif name == "replicas":
            lines.append("replicas: {}")
    if reserved:
        lines.insert(-len(reserved) - 1, "# reserved: containers this change removes, or replaces where they are with "
                                         "a smaller claim; they keep what they hold until the next `pulumi up` is done")
    return "\n".join(lines) + "\n"


def lock_matches(prior: Prior, placement: Placement) -> bool:
    """Whether the lock's replicas are exactly this placement's (its reservations are about the last change)."""
    return prior.replicas == {a.key: LockedReplica(a.key, a.host, a.vendor, a.gpus, a.uuids, a.port, a.claim)
                              for a in placement.assignments}


def write_lock(path: Path, stack: str, placement: Placement, display: str | None = None) -> bool:
    """Write the lock atomically (a temporary file, then a rename); returns whether the file changed."""
    name = display or str(path)
    text = render_lock(stack, placement)
    if path_kind(path.parent) != "folder":
        raise InputError([Problem(name, 0, 0, "", f"the folder {path.parent} does not exist; create it or give "
                                                  "another --lock path")])
    try:
        if path_kind(path) == "file" and read_text(path, name) == text:
            return False
    except InputError:
        pass  # an unreadable old lock is replaced
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise InputError([Problem(name, 0, 0, "", f"cannot write the lock: {err.strerror or err}")]) from None
    return True
