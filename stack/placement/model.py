"""The data placement reads and writes. Frozen dataclasses: hashable, easy to compare, and (``_quick_init``)
cheap to make."""
from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field, fields

from inventory.sizes import format_mib

#: how a replica is named everywhere (lock keys, outputs, messages): ``<deployment>/<replica>``
REPLICA_KEY = re.compile(r"^([a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?)/(0|[1-9][0-9]{0,5})\Z")


def _quick_init(cls):
    """Give a frozen, slotted dataclass an ``__init__`` that fills each slot through its descriptor (fields with
    ``init=False`` are derived: the class's ``__post_init__``, called last, sets them the same way).

    The one dataclasses writes for a frozen class calls ``object.__setattr__`` once per field (plain
    assignment is refused), which makes construction about twice as slow; a plan makes a Demand per replica
    and an Assignment and a Claim per replica it commits, tens of thousands. Same parameters, defaults and
    frozenness: assigning afterwards still raises FrozenInstanceError (tests/test_placement_model.py)."""
    params, body, names = [], [], {}
    for f in fields(cls):
        if not f.init:  # derived from the others: set by the class's __post_init__
            continue
        if f.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: _quick_init handles plain fields only")
        names[f"_set_{f.name}"] = getattr(cls, f.name).__set__  # the slot's member descriptor
        if f.default is MISSING:
            params.append(f.name)
        else:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body), names)  # noqa: S102 - our own fields
    names["__init__"].__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = names["__init__"]
    return cls


def replica_key(deployment: str, replica: int) -> str:
    return f"{deployment}/{replica}"


def parse_replica_key(key: str) -> tuple[str, int]:
    """``qwen3/1`` -> ``("qwen3", 1)``; ValueError for anything else."""
    m = REPLICA_KEY.match(key)
    if m is None:
        raise ValueError(f"'{key}' is not a replica key; write DEPLOYMENT/N, e.g. qwen3-8b/0")
    return m.group(1), int(m.group(3))


@_quick_init
@dataclass(frozen=True, slots=True)
class Demand:
    """One replica's needs. ``vram_mib`` None means each GPU is taken whole (exclusive)."""

    deployment: str
    replica: int
    framework: str
    gpus: int
    vram_mib: int | None = None
    #: smallest acceptable device size (a fractional claim's own size, or ``min_vram`` of a whole one)
    min_vram_mib: int = 0
    labels: tuple[tuple[str, str], ...] = ()
    vendor: str | None = None
    #: a glob, or globs any of which may match (a tuple: the demand stays hashable)
    gpu_model: str | tuple[str, ...] | None = None
    #: manual GPU selection: (host, device index) pairs this deployment may use, or None
    manual: tuple[tuple[str, int], ...] | None = None
    #: replicas of this deployment must not share a host (else: avoid it when possible)
    spread_hosts: bool = False
    #: host CPUs and memory the replica claims (on hosts whose inventory declares them)
    cpus: float = 0
    ram_mib: int = 0
    #: each GPU taken whole (``vram_mib`` is None)
    whole: bool = field(init=False, repr=False, compare=False)
    #: everything static feasibility depends on (the cache key of eligible classes, and of every memo by shape)
    static: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # derived once per replica: a 2,000-host plan reads ``static`` 64,000 times and ``whole`` 55,000
        whole = self.vram_mib is None
        _SET_WHOLE(self, whole)
        _SET_STATIC(self, (self.framework, self.labels, self.vendor, self.gpu_model, self.gpus, self.min_vram_mib, whole))

    @property
    def key(self) -> str:
        return f"{self.deployment}/{self.replica}"  # replica_key, inlined: asked tens of thousands of times a plan

    def allowed_on(self, host: str) -> set[int] | None:
        """Device indices manual GPU selection allows on ``host``; None when there is no selection."""
        if self.manual is None:
            return None
        return {i for (name, i) in self.manual if name == host}

    @property
    def claim(self) -> "Claim":
        """Its shape as the lock records it; equal claims are one object (a plan asks one per replica it commits:
        100,000 at 21,000 hosts, mostly of a few hundred shapes)."""
        cpus, ram = self.cpus, self.ram_mib
        # (their types too: 2 and 2.0 are equal keys, and the lock writes them as they are)
        key = (self.framework, self.gpus, self.vram_mib, self.min_vram_mib if self.vram_mib is None else 0,
               cpus, ram, cpus.__class__, ram.__class__)
        got = _CLAIMS.get(key)
        if got is None:
            if len(_CLAIMS) >= _CLAIMS_KEPT:
                _CLAIMS.clear()
            got = _CLAIMS[key] = Claim(*key[:6])
        return got

    def describe(self) -> str:
        if self.gpus == 0:
            return f"{self.framework} (no GPU)"
        per = "whole" if self.vram_mib is None else format_mib(self.vram_mib)
        if self.vram_mib is None and self.min_vram_mib:
            per = f"whole ≥ {format_mib(self.min_vram_mib)}"
        return f"{self.gpus} × {per} {self.framework}"


#: claims made, by their fields (``Demand.claim``): at most _CLAIMS_KEPT, then forgotten all at once
_CLAIMS: dict[tuple, "Claim"] = {}
_CLAIMS_KEPT = 4096

# the slots' member descriptors: how __post_init__ sets a frozen instance's derived fields
_SET_WHOLE = Demand.whole.__set__  # type: ignore[attr-defined]
_SET_STATIC = Demand.static.__set__  # type: ignore[attr-defined]

#: a run's demands by (deployment, replica), the key its ``placed`` files assignments by (no string formatted per
#: lookup)
ByKey = dict[tuple[str, int], Demand]


@_quick_init
@dataclass(frozen=True, slots=True)
class Claim:
    """The shape of a demand, as the lock records it: a locked replica stays only if this is unchanged."""

    framework: str
    gpus: int
    vram_mib: int | None  # None: whole
    min_vram_mib: int = 0
    cpus: float = 0
    ram_mib: int = 0

    def same_devices(self, other: "Claim") -> bool:
        """Same kind and number of devices, each taken whole or shared alike: the replica may stay on
        its devices if the new sizes still fit there."""
        return (self.framework, self.gpus, self.vram_mib is None) == (other.framework, other.gpus,
                                                                       other.vram_mib is None)


@_quick_init
@dataclass(frozen=True, slots=True)
class LockedReplica:
    """Where a replica was placed last time (from ``stack/<stack>.lock.yaml``)."""

    key: str
    host: str
    vendor: str | None
    gpus: tuple[int, ...]
    uuids: tuple[str | None, ...]
    port: int
    claim: Claim


@_quick_init
@dataclass(frozen=True, slots=True)
class Assignment:
    deployment: str
    replica: int
    host: str
    vendor: str | None
    gpus: tuple[int, ...]
    uuids: tuple[str | None, ...]
    vram_mib: int  # claimed per GPU (a whole GPU claims its full size)
    whole: bool
    port: int
    status: str  # kept | new | moved
    reason: str = ""  # why it moved (stable code), "" otherwise
    previous_host: str | None = None
    claim: Claim | None = None

    @property
    def key(self) -> str:
        return f"{self.deployment}/{self.replica}"


@_quick_init
@dataclass(frozen=True, slots=True)
class Unplaced:
    deployment: str
    replica: int
    demand: str  # human summary, e.g. "2 × 80 GiB cuda"
    #: hosts rejected per filter, by stable reason code, in pipeline order
    rejected: dict[str, int]
    message: str
    never_fits: bool  # no single host could hold it even when empty
    previous_host: str | None = None

    @property
    def key(self) -> str:
        return f"{self.deployment}/{self.replica}"


@_quick_init
@dataclass(frozen=True, slots=True)
class Removed:
    key: str
    host: str
    gpus: tuple[int, ...]
    port: int

    @property
    def deployment(self) -> str:
        return parse_replica_key(self.key)[0]

    @property
    def replica(self) -> int:
        return parse_replica_key(self.key)[1]


@dataclass(frozen=True)
class Placement:
    strategy: str
    assignments: tuple[Assignment, ...]
    unplaced: tuple[Unplaced, ...]
    removed: tuple[Removed, ...]
    moved_reasons: dict[str, str] = field(default_factory=dict)
    #: lock entries that did not stay where they were (removed or moved): their containers exist
    #: until the up that applies this plan deletes them, so their GPUs and ports were held
    departing: tuple[LockedReplica, ...] = ()

    def by_key(self) -> dict[str, Assignment]:
        return {a.key: a for a in self.assignments}
