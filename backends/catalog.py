"""Load backend specs as GPUStack's catalog does: by name, the user's files over the shipped ones.

What can be dropped into ``backends/``:

- ``<name>/spec.yaml``: one spec (the community repository's layout);
- any ``*.yaml`` file, a single spec or a list of specs: GPUStack's aggregated community catalog
  as downloaded, or one entry pasted from it;
- a spec whose ``backend_name`` is an existing built-in or community backend and whose versions
  all end in ``-custom``: custom versions added to that backend (GPUStack's "Add Version").

Rules, as GPUStack applies them (gpustack/schemas/inference_backend.py, server/controllers.py):

- the source is ``backend_source`` (``built_in``/``built-in``, ``community``, ``custom``) or
  ``is_built_in``; entries of a catalog list are community; an unmarked spec whose name ends in
  ``-custom`` is custom, one whose name does not is taken as community (a note says so);
- a spec with the name of a shipped backend replaces it (GPUStack updates catalog entries by
  name), and ``validate`` notes which shipped file it overrides; two user files with one name
  are an error;
- keys GPUStack does not know are ignored as GPUStack ignores them, with a note naming them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from documents.problems import InputError, Problem, ProblemList, did_you_mean
from documents.validation import validate
from documents.yaml_reader import Marks, path_kind, read_yaml

from .schema import BackendSpec, VersionConfig, unknown_keys

BACKENDS_DIR = Path(__file__).resolve().parent
#: the backends this repository ships (backends/<folder>/spec.yaml); a user's spec of the same name wins
SHIPPED = frozenset({"vllm", "sglang", "mindie", "voxbox", "llama.cpp", "mineru", "paddlex-genai",
                     "text-embeddings-inference", "kokoro-fastapi", "tensorrt-llm"})


@dataclass(frozen=True)
class BackendEntry:
    """A validated spec and where it came from, so later stages can point back at it."""

    spec: BackendSpec
    marks: Marks
    base: tuple  # path of the spec inside its file: () or (index,) in a catalog list
    #: where each version was defined (custom versions may come from another file)
    version_marks: dict[str, tuple[Marks, tuple]]
    shipped: bool = False

    @property
    def name(self) -> str:
        return self.spec.backend_name

    def problem(self, path: tuple, message: str, at_key: bool = False) -> Problem:
        return self.marks.problem(self.base + tuple(path), message, at_key=at_key)


class Catalog:
    """Backends by name. Lookups that miss say what exists. ``notes``: what loading ignored or decided."""

    def __init__(self, entries: Iterable[BackendEntry] = (), notes: Iterable[Problem] = ()):
        self._by_name: dict[str, BackendEntry] = {}
        for entry in entries:
            self._by_name[entry.name] = entry
        self.notes: list[Problem] = sorted(set(notes), key=Problem.sort_key)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[BackendEntry]:
        return iter(sorted(self._by_name.values(), key=lambda e: e.name.lower()))

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> BackendEntry | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name, key=str.lower)

    def unknown_message(self, name: str) -> str:
        return (f"unknown backend '{name}'{did_you_mean(name, self.names())}; "
                f"known: {', '.join(self.names()) or 'none'}")


@dataclass
class _Loaded:
    entries: list[BackendEntry] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)


def load_file(path: Path, display: str | None = None, source: str | None = None,
              shipped: bool = False) -> _Loaded:
    """All specs in one file: a single mapping or a list (a catalog, whose entries are community).

    ``source`` marks specs that do not mark themselves (``community`` for files taken from
    GPUStack's community repository).
    """
    data, marks = read_yaml(path, display)
    problems = ProblemList()
    out = _Loaded()
    if isinstance(data, dict):
        docs = [((), data, source)]
    elif isinstance(data, list):
        docs = [((i,), item, "community") for i, item in enumerate(data)]
        if not docs:
            raise InputError([Problem(marks.file, 1, 1, "", "the catalog list is empty")])
    else:
        raise InputError([marks.problem((), "a backend spec must be a mapping (backend_name, version_configs, "
                                             "...) or a list of them (a catalog)")])
    for base, doc, doc_source in docs:
        if not isinstance(doc, dict):
            problems.add(marks.problem(base, "a catalog entry must be a mapping with backend_name and "
                                             "version_configs"))
            continue
        doc, notes = _drop_unknown(doc, marks, base)
        out.notes += notes
        if "backend_source" not in doc and doc.get("is_built_in") is not True:
            name = doc.get("backend_name")
            if doc_source:
                doc = {**doc, "backend_source": doc_source}
            elif isinstance(name, str) and not name.strip().endswith("-custom"):
                doc = {**doc, "backend_source": "community"}
                out.notes.append(marks.problem(base + ("backend_name",),
                                               f"'{name.strip()}' has no -custom suffix: loaded as a community "
                                               "backend, as GPUStack's catalog marks it (write backend_source: "
                                               "custom and a -custom name for a backend of your own)"))
        spec = problems.absorb(validate, BackendSpec, doc, marks, base)
        if spec is None:
            continue
        out.entries.append(BackendEntry(spec, marks, base,
                                        {v: (marks, base + ("version_configs", v)) for v in spec.version_configs},
                                        shipped))
    problems.raise_if_any()
    return out


def _drop_unknown(doc: dict, marks: Marks, base: tuple) -> tuple[dict, list[Problem]]:
    """GPUStack ignores keys it does not know; so does gpufleet, and says which."""
    top, per_version = unknown_keys(doc)
    if not top and not per_version:
        return doc, []
    notes = []
    known = sorted(BackendSpec.model_fields)
    for key in top:
        notes.append(marks.problem(base + (key,), f"'{key}' is not a backend field GPUStack reads; ignored"
                                                  f"{did_you_mean(key, known)}", at_key=True))
    doc = {k: v for k, v in doc.items() if k not in top}
    if per_version:
        vknown = sorted(VersionConfig.model_fields)
        versions = dict(doc["version_configs"])
        for name, keys in per_version.items():
            for key in keys:
                notes.append(marks.problem(base + ("version_configs", name, key),
                                           f"'{key}' is not a version field GPUStack reads; ignored"
                                           f"{did_you_mean(key, vknown)}", at_key=True))
            versions[name] = {k: v for k, v in versions[name].items() if k not in keys}
        doc["version_configs"] = versions
    return doc, notes


def spec_files(folder: Path) -> list[Path]:
    """``<folder>/<name>/spec.yaml`` and catalog files ``<folder>/*.yaml``, in a stable order."""
    files = [p for p in folder.glob("*/spec.yaml") if path_kind(p) == "file"]
    files += [p for p in folder.glob("*.yaml") if path_kind(p) == "file"]
    return sorted(files)


def _is_shipped(file: Path) -> bool:
    return file.name == "spec.yaml" and file.parent.name in SHIPPED and file.parent.parent.name == "backends"


def load_catalog(paths: Iterable[Path] = (BACKENDS_DIR,), display_root: Path | None = None,
                 community: Iterable[Path] = ()) -> Catalog:
    """Load every spec under the given folders/files into one Catalog; all problems reported together."""
    community_files = {p.resolve() for p in community}
    problems = ProblemList()
    notes: list[Problem] = []
    files: list[Path] = []
    for path in paths:
        files.extend(spec_files(path) if path_kind(path) == "folder" else [path])
    loaded: list[BackendEntry] = []
    for file in files:
        source = "community" if file.resolve() in community_files else None
        got = problems.absorb(load_file, file, _display(file, display_root), source, _is_shipped(file))
        if got is not None:
            loaded.extend(got.entries)
            notes.extend(got.notes)
    entries: dict[str, BackendEntry] = {}
    # shipped and built-in first, so user files extend or replace them whatever the folder order
    for entry in sorted(loaded, key=lambda e: (not e.shipped, e.spec.backend_source != "built-in")):
        first = entries.get(entry.name)
        if first is None:
            entries[entry.name] = entry
        elif _only_custom_versions(entry) and first.spec.backend_source in ("built-in", "community"):
            merged = problems.absorb(_add_custom_versions, first, entry)
            if merged:
                entries[entry.name] = merged
        elif first.shipped and not entry.shipped:
            line = first.marks.of_value(first.base + ("backend_name",))[0]
            notes.append(entry.problem(("backend_name",), f"replaces the shipped backend '{entry.name}' "
                                                          f"({first.marks.file}:{line}), as GPUStack updates "
                                                          "catalog entries by name"))
            entries[entry.name] = entry
        else:
            line = first.marks.of_value(first.base + ("backend_name",))[0]
            problems.add(entry.problem(("backend_name",),
                                       f"backend '{entry.name}' is already defined in {first.marks.file}:{line}; "
                                       "keep one, or name versions '*-custom' to add them to it"))
    for entry in entries.values():
        problems.extend(_source_checks(entry))
    problems.raise_if_any()
    return Catalog(entries.values(), notes)


def _only_custom_versions(entry: BackendEntry) -> bool:
    return all(v.endswith("-custom") for v in entry.spec.version_configs)


def _source_checks(entry: BackendEntry) -> list[Problem]:
    spec = entry.spec
    if spec.backend_source == "custom" and not spec.backend_name.endswith("-custom"):
        return [entry.problem(("backend_name",),
                              f"custom backend name '{spec.backend_name}' must end in '-custom' (GPUStack's rule), "
                              f"e.g. '{spec.backend_name}-custom'")]
    return []


def _add_custom_versions(base: BackendEntry, extra: BackendEntry) -> BackendEntry:
    """GPUStack's 'add a version to a built-in or community backend': only versions, each named ``*-custom``."""
    problems = [extra.problem(("version_configs", v), f"version '{v}' is already defined for '{base.name}'",
                              at_key=True)
                for v in extra.spec.version_configs if v in base.spec.version_configs]
    if problems:
        raise InputError(problems)
    versions: dict[str, VersionConfig] = {**base.spec.version_configs, **extra.spec.version_configs}
    spec = base.spec.model_copy(update={"version_configs": versions})
    return BackendEntry(spec, base.marks, base.base, {**base.version_marks, **extra.version_marks}, base.shipped)


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except (ValueError, OSError, RuntimeError):
            pass
    return str(path)
