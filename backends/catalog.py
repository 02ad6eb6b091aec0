"""Load backend specs from a spec.yaml, a folder of backend folders, or a catalog list.

The three shapes GPUStack uses:
- ``backends/<name>/spec.yaml``: one spec (the community repository's layout);
- a YAML list of specs (GPUStack's aggregated community catalog): every entry is community;
- a spec whose ``backend_name`` is a built-in backend already loaded and whose versions all end
  in ``-custom``: custom versions added to that built-in (GPUStack's "Add Version").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from documents.problems import InputError, Problem, ProblemList, did_you_mean
from documents.validation import validate
from documents.yaml_reader import Marks, read_yaml

from .schema import BackendSpec, VersionConfig

BACKENDS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BackendEntry:
    """A validated spec and where it came from, so later stages can point back at it."""

    spec: BackendSpec
    marks: Marks
    base: tuple  # path of the spec inside its file: () or (index,) in a catalog list
    #: where each version was defined (custom versions may come from another file)
    version_marks: dict[str, tuple[Marks, tuple]]

    @property
    def name(self) -> str:
        return self.spec.backend_name

    def problem(self, path: tuple, message: str, at_key: bool = False) -> Problem:
        return self.marks.problem(self.base + tuple(path), message, at_key=at_key)


class Catalog:
    """Backends by name. Lookups that miss say what exists."""

    def __init__(self, entries: Iterable[BackendEntry] = ()):
        self._by_name: dict[str, BackendEntry] = {}
        for entry in entries:
            self._by_name[entry.name] = entry

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


def _source_checks(entry_spec: BackendSpec, marks: Marks, base: tuple) -> list[Problem]:
    if entry_spec.backend_source == "custom" and not entry_spec.backend_name.endswith("-custom"):
        name = entry_spec.backend_name
        return [marks.problem(base + ("backend_name",),
                              f"custom backend name '{name}' must end in '-custom' (GPUStack's rule), e.g. "
                              f"'{name}-custom'; a built-in or community spec says so with "
                              "is_built_in: true or backend_source: community")]
    return []


def load_file(path: Path, display: str | None = None, source: str | None = None) -> list[BackendEntry]:
    """All specs in one file: a single mapping or a list (a catalog, whose entries are community).

    ``source`` says where a spec without its own marking came from: ``community`` for files
    taken from GPUStack's community repository, else it is a custom backend.
    """
    data, marks = read_yaml(path, display)
    problems = ProblemList()
    if isinstance(data, dict):
        docs = [((), data, source)]
    elif isinstance(data, list):
        docs = [((i,), item, "community") for i, item in enumerate(data)]
        if not docs:
            raise InputError([Problem(marks.file, 1, 1, "", "the catalog list is empty")])
    else:
        raise InputError([marks.problem((), "a backend spec must be a mapping (backend_name, version_configs, "
                                             "...) or a list of them (a catalog)")])
    entries = []
    for base, doc, source in docs:
        if not isinstance(doc, dict):
            problems.add(marks.problem(base, "a catalog entry must be a mapping with backend_name and "
                                             "version_configs"))
            continue
        if source and "backend_source" not in doc and doc.get("is_built_in") is not True:
            doc = {**doc, "backend_source": source}
        spec = problems.absorb(validate, BackendSpec, doc, marks, base)
        if spec is None:
            continue
        entries.append(BackendEntry(spec, marks, base,
                                    {v: (marks, base + ("version_configs", v)) for v in spec.version_configs}))
    problems.raise_if_any()
    return entries


def spec_files(folder: Path) -> list[Path]:
    """``<folder>/<name>/spec.yaml`` in a stable order."""
    return sorted(p for p in folder.glob("*/spec.yaml") if p.is_file())


def load_catalog(paths: Iterable[Path] = (BACKENDS_DIR,), display_root: Path | None = None,
                 community: Iterable[Path] = ()) -> Catalog:
    """Load every spec under the given folders/files into one Catalog; all problems reported together.

    Files listed in ``community`` are community specs even when they do not say so themselves.
    """
    community_files = {p.resolve() for p in community}
    problems = ProblemList()
    files: list[Path] = []
    for path in paths:
        files.extend(spec_files(path) if path.is_dir() else [path])
    loaded: list[BackendEntry] = []
    for file in files:
        source = "community" if file.resolve() in community_files else None
        got = problems.absorb(load_file, file, _display(file, display_root), source)
        loaded.extend(got or [])
    entries: dict[str, BackendEntry] = {}
    # built-ins first so that custom-version files can extend them whatever the folder order
    for entry in sorted(loaded, key=lambda e: e.spec.backend_source != "built-in"):
        first = entries.get(entry.name)
        if first is None:
            suffix = _source_checks(entry.spec, entry.marks, entry.base)
            if suffix:
                problems.extend(suffix)
                continue
            entries[entry.name] = entry
        elif first.spec.backend_source == "built-in":
            merged = problems.absorb(_add_custom_versions, first, entry)
            if merged:
                entries[entry.name] = merged
        else:
            line = first.marks.of_value(first.base + ("backend_name",))[0]
            problems.add(entry.problem(("backend_name",),
                                       f"backend '{entry.name}' is already defined in {first.marks.file}:{line}; "
                                       "backend names must be unique"))
    problems.raise_if_any()
    return Catalog(entries.values())


def _add_custom_versions(builtin: BackendEntry, extra: BackendEntry) -> BackendEntry:
    """GPUStack's 'add a version to a built-in backend': only versions, each named ``*-custom``."""
    problems = []
    for version in extra.spec.version_configs:
        if not version.endswith("-custom"):
            problems.append(extra.problem(("version_configs", version),
                                          f"version '{version}' added to built-in backend '{builtin.name}' must end "
                                          f"in '-custom', e.g. '{version}-custom'", at_key=True))
        elif version in builtin.spec.version_configs:
            problems.append(extra.problem(("version_configs", version),
                                          f"version '{version}' is already defined for '{builtin.name}'", at_key=True))
    if problems:
        raise InputError(problems)
    versions: dict[str, VersionConfig] = {**builtin.spec.version_configs, **extra.spec.version_configs}
    spec = builtin.spec.model_copy(update={"version_configs": versions})
    return BackendEntry(spec, builtin.marks, builtin.base, {**builtin.version_marks, **extra.version_marks})


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)
