"""Find and load a gpufleet project: backend catalog, a stack file, its inventory, its workloads.

Every loader collects its problems, so one run shows everything wrong across all files.
Paths in messages are relative to the project root, as a reviewer sees them in a diff.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from backends.catalog import Catalog, load_catalog
from documents.problems import InputError, Problem, ProblemList
from documents.validation import validate
from documents.yaml_reader import Marks, path_kind, read_yaml
from inventory.fleet import Fleet, load_fleet

from .collector import collector_paused
from .resource_fit import models_path, read_models

from .schema import StackFile
from .workloads import Workload, resolve

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
STACK_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?\Z")


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` holding Pulumi.yaml and backends/; else this checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file() and (folder / "backends").is_dir():
            return folder
    return PACKAGE_ROOT


def display(path: Path, root: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), root.resolve()) if path.resolve().is_relative_to(root.resolve()) \
            else str(path)
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return str(path)


def stack_path(root: Path, stack: str) -> Path:
    """``demo`` -> ``<root>/stack/demo.yaml``; anything with a slash or .yaml suffix is a path."""
    if "/" in stack or stack.endswith((".yaml", ".yml")):
        return Path(stack)
    return root / "stack" / f"{stack}.yaml"


@dataclass(frozen=True)
class Project:
    root: Path
    name: str  # the stack name
    catalog: Catalog
    stack: StackFile
    stack_marks: Marks
    stack_file: Path
    fleet: Fleet
    workloads: list[Workload]

    @property
    def notes(self) -> list[Problem]:
        """What loading ignored or decided, and values that are valid but look like mistakes."""
        fits = {self.stack_marks.problem(("deployments", w.name, "resources"), f"resource fit: {w.fit.describe()}")
                for w in self.workloads if w.fit is not None}
        return sorted(set(self.catalog.notes) | set(stack_notes(self.stack, self.stack_marks)) | fits,
                      key=Problem.sort_key)

    def fits(self) -> list[dict]:
        """The sizes ``auto`` resources got, for the plan's JSON."""
        return [{"deployment": w.name, "weight_bytes": w.fit.weight_bytes, "vram_claim_mib": w.fit.claim_mib,
                 "gpus": w.fit.gpus, "min_vram_mib": w.fit.min_vram_mib, "estimate": w.fit.describe()}
                for w in self.workloads if w.fit]


#: a sized vram claim below this is almost surely a size written without a unit (a bare number is MiB)
IMPLAUSIBLE_VRAM_MIB = 1024


def stack_notes(stack: StackFile, marks: Marks) -> list[Problem]:
    out = []
    for name, d in stack.deployments.items():
        if d.backend.lower() == "llama.cpp" and d.model.kind != "local" and not d.model.filename:
            key = "huggingface_filename" if d.model.kind == "huggingface" else "model_scope_file_path"
            out.append(marks.problem(("deployments", name, "model"),
                                     f"llama.cpp loads one GGUF file, but the whole repository {d.model.ref} will be "
                                     f"fetched and its folder passed as -m; name the file with {key}, e.g. "
                                     "'*Q4_K_M*.gguf'"))
        vram = d.resources.vram
        if vram not in ("whole", "auto") and d.resources.gpus and vram < IMPLAUSIBLE_VRAM_MIB:
            out.append(marks.problem(("deployments", name, "resources", "vram"),
                                     f"{vram} MiB per GPU is implausibly small for a model; a bare number is MiB, "
                                     f"so write {vram}GiB if that is what you mean"))
    return out


def load_stack_file(path: Path, root: Path) -> tuple[StackFile, Marks]:
    data, marks = read_yaml(path, display(path, root))
    if not isinstance(data, dict):
        raise InputError([marks.problem((), "a stack file is a mapping with 'inventory' and 'deployments'")])
    return validate(StackFile, data, marks), marks


def inventory_path(stack_file: Path, stack: StackFile) -> Path:
    """The inventory named by a stack file, relative to the stack file's folder."""
    path = Path(stack.inventory)
    return path if path.is_absolute() else stack_file.parent / path


#: files that sit beside a stack file and belong to it: its lock and its model metadata
COMPANIONS = (".lock.yaml", ".models.yaml")


def stack_files(folder: Path) -> list[Path]:
    """The stack files of a folder: every .yaml but the stacks' companions (lock, models)."""
    return sorted(p for p in folder.glob("*.yaml") if not p.name.endswith(COMPANIONS))


@collector_paused()
def load_project(stack: str, root: Path | None = None, inventory: Path | None = None,
                 catalog_paths: list[Path] | None = None) -> Project:
    root = root or find_root()
    problems = ProblemList()
    catalog = problems.absorb(load_catalog, catalog_paths or [root / "backends"], root)
    path = stack_path(root, stack)
    if path_kind(path) == "missing" and "/" not in stack and not stack.endswith((".yaml", ".yml")):
        known = [p.stem for p in stack_files(root / "stack")]
        problems.add(Problem(display(path, root), 0, 0, "",
                             f"no stack file for stack '{stack}'; stacks here: {', '.join(known) or 'none'}"))
        problems.raise_if_any()
    loaded = problems.absorb(load_stack_file, path, root)
    fleet = None
    if loaded is not None:
        stack_file, marks = loaded
        inv = inventory or inventory_path(path, stack_file)
        if path_kind(inv) == "missing" and inventory is None:
            problems.add(marks.problem(("inventory",), f"inventory file '{stack_file.inventory}' not found "
                                                       f"(looked for {display(inv, root)})"))
        elif path_kind(inv) == "folder" and inventory is None:
            problems.add(marks.problem(("inventory",), f"'{stack_file.inventory}' is a folder; name the inventory "
                                                       "file, e.g. ../inventory/prod.yaml"))
        else:
            fleet = problems.absorb(load_fleet, inv, display(inv, root))
    problems.raise_if_any()
    assert catalog is not None and loaded is not None and fleet is not None
    stack_file, marks = loaded
    name = path.stem
    if not STACK_NAME.match(name):
        raise InputError([Problem(display(path, root), 0, 0, "", f"stack name '{name}' (from the file name) must be "
                                  "lowercase letters, digits and '-', at most 32 characters: it becomes part of "
                                  "container names")])
    needs_fit = any(d.resources.auto for d in stack_file.deployments.values())
    models_file = models_path(path)
    models = read_models(models_file, display(models_file, root)) if needs_fit else {}
    workloads = resolve(stack_file, marks, catalog, fleet, models, display(models_file, root))
    return Project(root, name, catalog, stack_file, marks, path, fleet, workloads)
