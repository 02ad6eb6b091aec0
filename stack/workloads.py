"""Resolve each deployment against the catalog and the inventory: a Workload per deployment.

This is where cross-file rules live (backend and version exist, framework fits the
inventory, selectors agree with the framework, templates only use known variables), so
``gpufleet validate`` and ``gpufleet plan`` fail the same way, before placement runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from backends.catalog import BackendEntry, Catalog
from backends.memory import knob_for
from backends.parameters import (
    ParameterError,
    flags,
    flatten_to_argv,
    merge,
    normalize_param_format,
)
from backends.render import (
    BUILTIN_VARIABLES,
    SECRET_PREFIX,
    Template,
    check_variables,
)
from backends.schema import BackendSpec, VersionConfig
from backends.versions import newest
from documents.fields import is_under, system_path_reason
from documents.problems import InputError, Problem, did_you_mean
from documents.yaml_reader import Marks
from inventory.fleet import Fleet
from inventory.vendors import FRAMEWORK_VENDORS, VENDORS

from .resource_fit import Fit, ModelMeta, fit
from .schema import Deployment, StackFile

#: GPUStack's name for a model run with its own image and command (BackendEnum.CUSTOM)
CUSTOM = "Custom"
#: GPUStack's health check paths for built-ins that set none (gpustack/worker/serve_manager.py, is_ready)
BUILTIN_HEALTH_PATH = "/v1/models"
MINDIE_HEALTH_PATH = "/info"
_DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?\Z")


@dataclass(frozen=True)
class Workload:
    """A deployment with everything resolved that does not depend on where it lands."""

    name: str
    spec: Deployment
    backend: BackendEntry
    version: str
    config: VersionConfig
    framework: str
    image: str
    entrypoint: Template | None
    run_command: Template | None
    env: dict[str, str]  # backend default_env < version env < deployment env; may hold secret:NAME
    parameters: list[str]  # backend parameters, normalised, appended to the rendered command
    #: None: no health check, the replica is ready once it runs (GPUStack's rule for custom and community
    #: backends without a path)
    health_check_path: str | None
    manual: tuple[tuple[str, int], ...] | None
    marks: Marks | None = None
    #: GPUStack's "Custom" mode: the deployment's own image and command, no backend defaults
    custom: bool = False
    #: a built-in whose command GPUStack builds itself (backends.builtins): no run_command was given
    builtin_command: bool = False  # where the deployment is written, for problems found after placement
    #: resources sized from the model's metadata (``auto``), or None
    fit: Fit | None = None

    @property
    def gpus(self) -> int:
        return self.fit.gpus if self.fit else self.spec.resources.gpu_count

    def spec_problem(self, path: tuple, message: str) -> Problem:
        if self.marks is None:
            return Problem("", 0, 0, f"deployments.{self.name}", message)
        return self.marks.problem(("deployments", self.name) + tuple(path), message)

    @property
    def model_name(self) -> str:
        return self.spec.model_name or self.name

    @property
    def secret_env(self) -> dict[str, str]:
        """env var -> Pulumi config key, for values written secret:NAME."""
        return {k: v[len(SECRET_PREFIX):] for k, v in self.env.items() if v.startswith(SECRET_PREFIX)}


def resolve(stack: StackFile, marks: Marks, catalog: Catalog, fleet: Fleet,
            models: dict[str, ModelMeta] | None = None, models_file: str = "") -> list[Workload]:
    """All deployments resolved, or InputError listing every problem in every deployment.

    ``models``: the stack's model metadata (``stack/<stack>.models.yaml``) for ``auto`` resources."""
    problems: list[Problem] = []
    out: list[Workload] = []
    fleet_frameworks = sorted({fw for h in fleet.hosts for fw in h.frameworks})
    shared = _Shared()
    for name in sorted(stack.deployments):
        try:
            w = _resolve_one(name, stack.deployments[name], marks, catalog, fleet, fleet_frameworks, shared)
            if w.spec.resources.auto:
                w = replace(w, fit=fit(name, w.spec, w.framework, fleet, models or {}, models_file, marks,
                                       w.backend.name, w.backend.spec.backend_source == "built-in", w.parameters))
            out.append(w)
        except InputError as err:
            problems.extend(err.problems)
    if problems:
        raise InputError(problems)
    return out


class _BackendVersion:
    """What every deployment of one backend version starts from: worked out once per ``resolve``."""

    __slots__ = ("default_flags", "defaults", "entrypoint", "env", "parameters", "problems", "run_command")

    def __init__(self, entry: BackendEntry, version: str, config: VersionConfig):
        self.env = {**entry.spec.default_env, **config.env}
        self.entrypoint = _backend_template(entry, config.entrypoint, version, "entrypoint") \
            or _backend_template(entry, entry.spec.default_entrypoint, None, "default_entrypoint")
        self.run_command = _backend_template(entry, config.run_command, version, "run_command") \
            or _backend_template(entry, entry.spec.default_run_command, None, "default_run_command")
        self.problems: list[Problem] = []  # of the backend's own parameters: reported with each deployment
        self.defaults = _flatten(entry.spec.default_backend_param, entry.marks,
                                 entry.base + ("default_backend_param",), self.problems)
        self.default_flags = flags(self.defaults)
        #: the parameters of a deployment that adds and drops none
        self.parameters = normalize_param_format(self.defaults, entry.spec.parameter_format)


class _Shared:
    """What ``resolve`` works out once and reuses across deployments: a stack has thousands, most on a few
    backend versions."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], _BackendVersion] = {}
        #: (template text, variables, secret names) that passed check_variables: its verdict depends on nothing
        #: else (a problem, which names where the template is written, is never kept)
        self.checked: set[tuple] = set()

    def version(self, entry: BackendEntry, version: str, config: VersionConfig) -> _BackendVersion:
        got = self.versions.get((entry.name, version))
        if got is None:
            got = self.versions[entry.name, version] = _BackendVersion(entry, version, config)
        return got

    def check(self, template: Template, variables: list[str], secret_names: list[str]) -> None:
        key = (template.text, tuple(variables), tuple(secret_names))
        if key not in self.checked:
            check_variables(template, variables, secret_names)
            self.checked.add(key)


def _resolve_one(name: str, dep: Deployment, marks: Marks, catalog: Catalog, fleet: Fleet,
                 fleet_frameworks: list[str], shared: _Shared) -> Workload:
    at = ("deployments", name)
    if not _DEPLOYMENT_NAME.match(name):
        raise InputError([marks.problem(at, f"deployment name '{name}' must be lowercase letters, digits and '-', "
                                            "at most 48 characters (it becomes the container name "
                                            "gpufleet-<name>-<replica>)", at_key=True)])
    custom = dep.backend == CUSTOM or (dep.image is not None and dep.run_command is not None)
    if dep.backend == CUSTOM:
        entry, version, config = _custom_entry(name, dep, marks, at)
    else:
        entry = catalog.get(dep.backend)
        if entry is None:
            raise InputError([marks.problem(at + ("backend",), catalog.unknown_message(dep.backend))])
        version, config = _version(entry, dep, marks, at)
    framework = config.custom_framework
    problems: list[Problem] = []

    gpus = dep.resources.gpu_count
    if framework == "cpu" and gpus > 0:
        problems.append(marks.problem(at + ("resources", "gpus"),
                                      f"version '{version}' of {entry.name} runs on cpu; set resources.gpus: 0 "
                                      "or pick a GPU version"))
    if framework != "cpu" and gpus == 0:
        problems.append(marks.problem(at + ("resources", "gpus"),
                                      f"version '{version}' of {entry.name} needs {framework} GPUs; set "
                                      "resources.gpus to 1 or more, or pick a cpu version"))
    if framework not in fleet_frameworks:
        problems.append(marks.problem(at + ("version",) if dep.version else at + ("backend",),
                                      f"{entry.name} {version} needs {framework}, which no host in {fleet.file} "
                                      f"provides (it has: {', '.join(fleet_frameworks)})"))
    vendor = dep.selectors.vendor
    if vendor and framework != "cpu" and VENDORS[vendor].framework != framework:
        problems.append(marks.problem(at + ("selectors", "vendor"),
                                      f"vendor {vendor} runs {VENDORS[vendor].framework}, but {entry.name} "
                                      f"{version} needs {framework} ({', '.join(FRAMEWORK_VENDORS[framework])})"))

    enforced = dep.resources.vram not in ("whole", "auto") and dep.resources.share == "enforced"
    if gpus and enforced and (custom or knob_for(entry.name) is None):
        who = "a custom command" if custom else entry.name
        problems.append(marks.problem(at + ("resources", "vram"),
                                      f"{who} has no setting gpufleet knows that caps its GPU memory, so a shared "
                                      "claim cannot be enforced; use vram: whole, or add share: advisory if the "
                                      "engine allocates only what it needs (or caps itself through its flags)"))

    if dep.model.local_path is not None:
        problems += _local_path_problems(dep.model.local_path, fleet, marks, at + ("model", "local_path"))

    manual = None
    if dep.gpu_selection is not None:
        manual = _manual(dep, marks, at, fleet, framework, problems)

    base = None if custom else shared.version(entry, version, config)
    if base is None:
        # GPUStack's "Custom" mode: the image's own entrypoint (or the deployment's) and the deployment's
        # command, environment and parameters; nothing of any backend's defaults
        env = dict(dep.env)
        entrypoint = _template(dep.entrypoint, marks, at + ("entrypoint",))
        run_command = _template(dep.run_command, marks, at + ("run_command",))
    else:
        env = {**base.env, **dep.env}
        entrypoint = _template(dep.entrypoint, marks, at + ("entrypoint",)) or base.entrypoint
        run_command = _template(dep.run_command, marks, at + ("run_command",)) or base.run_command
    secret_names = [k for k, v in env.items() if v.startswith(SECRET_PREFIX)]
    variables = list(BUILTIN_VARIABLES) + list(env)
    for template in (entrypoint, run_command):
        if template is not None:
            try:
                shared.check(template, variables, secret_names)
            except InputError as err:
                problems.extend(_also_for(err.problems, marks, at))
    defaults, default_flags = ([], set()) if base is None else (base.defaults, base.default_flags)
    if base is not None:
        problems += base.problems
    mine = _flatten(dep.backend_parameters, marks, at + ("backend_parameters",), problems)
    unknown_drop = sorted(set(dep.drop_default_parameters) - default_flags)
    if unknown_drop:
        problems.append(marks.problem(at + ("drop_default_parameters",),
                                      f"{', '.join(unknown_drop)} is not among {entry.name}'s default parameters "
                                      f"({', '.join(sorted(default_flags)) or 'none'})"))
    # GPUStack prefills a model's parameters with the backend's defaults and formats the whole list
    # per parameter_format (InferenceServer._flatten_backend_param); a deployment's flag replaces
    # the default of the same flag
    if base is not None and not mine and not dep.drop_default_parameters:
        parameters = list(base.parameters)
    else:
        parameters = normalize_param_format(merge(defaults, mine, dep.drop_default_parameters),
                                            None if base is None else entry.spec.parameter_format)
    builtin = (not custom and entry.spec.backend_source == "built-in" and dep.run_command is None
               and config.run_command is None)
    if builtin and entry.name == "MindIE" and parameters:
        shown = " ".join(parameters[:3]) + (" …" if len(parameters) > 3 else "")
        problems.append(marks.problem(at + ("backend_parameters",) if dep.backend_parameters else at, (
            f"MindIE takes its settings from config.json, which GPUStack writes from these parameters "
            f"(AscendMindIEParameters); gpufleet writes GPUStack's default config.json and does not translate "
            f"parameters yet: remove {shown}, or set MindIE's environment (e.g. NPU_MEMORY_FRACTION) in env")))
    if problems:
        raise InputError(problems)
    return Workload(
        name=name, spec=dep, backend=entry, version=version, config=config, framework=framework,
        image=dep.image or config.image_name, entrypoint=entrypoint, run_command=run_command, env=env,
        parameters=parameters,
        health_check_path=health_path(dep, entry, custom),
        manual=manual, marks=marks, custom=custom,
        builtin_command=builtin,
    )


def health_path(dep: Deployment, entry: BackendEntry, custom: bool) -> str | None:
    """GPUStack's is_ready (gpustack/worker/serve_manager.py) and its GPUSTACK_MODEL_HEALTH_CHECK_PATH override.

    The deployment's path, else the model's GPUSTACK_MODEL_HEALTH_CHECK_PATH, else the backend's; a built-in
    without one uses /v1/models (MindIE /info); a custom or community backend without one, and Custom mode,
    has no health check: it is ready once it runs.
    """
    if dep.health_check_path:
        return dep.health_check_path
    if dep.env.get("GPUSTACK_MODEL_HEALTH_CHECK_PATH"):
        return dep.env["GPUSTACK_MODEL_HEALTH_CHECK_PATH"]
    if custom:
        return None
    if entry.spec.health_check_path:
        return entry.spec.health_check_path
    if entry.spec.backend_source == "built-in":
        return MINDIE_HEALTH_PATH if entry.name == "MindIE" else BUILTIN_HEALTH_PATH
    return None


def _custom_entry(name: str, dep: Deployment, marks: Marks, at: tuple) -> tuple[BackendEntry, str, VersionConfig]:
    """``backend: Custom`` (GPUStack's name): no spec, the deployment's image and command on its accelerators."""
    missing = [k for k in ("image", "run_command") if getattr(dep, k) is None]
    if missing:
        raise InputError([marks.problem(at + ("backend",), f"backend: Custom runs the deployment's own image and "
                                                           f"command; set {' and '.join(missing)}")])
    vendor = dep.selectors.vendor
    if dep.resources.gpus and vendor is None:
        raise InputError([marks.problem(at + ("selectors",), "backend: Custom with GPUs needs selectors.vendor "
                                                             "(nvidia, amd, ascend, ...): it says which devices "
                                                             "the image runs on")])
    framework = VENDORS[vendor].framework if dep.resources.gpus and vendor else "cpu"
    config = VersionConfig(image_name=dep.image, custom_framework=framework)
    spec = BackendSpec(backend_name=CUSTOM, version_configs={"custom": config}, backend_source="custom")
    return BackendEntry(spec, marks, at, {"custom": (marks, at)}), "custom", config


def _version(entry: BackendEntry, dep: Deployment, marks: Marks, at: tuple) -> tuple[str, VersionConfig]:
    versions = entry.spec.version_configs
    if dep.version is not None:
        if dep.version not in versions:
            raise InputError([marks.problem(at + ("version",),
                                            f"{entry.name} has no version '{dep.version}'"
                                            f"{did_you_mean(dep.version, list(versions))}; versions: "
                                            f"{', '.join(versions)}")])
        return dep.version, versions[dep.version]
    default = entry.spec.default_version
    if default in versions:
        return default, versions[default]
    if entry.spec.backend_source != "built-in":
        # GPUStack's resolve_target_version: a non-built-in backend falls back to its newest version
        chosen = newest(versions)
        assert chosen is not None  # a spec has at least one version
        return chosen, versions[chosen]
    if default is None:
        raise InputError([marks.problem(at, f"no version given and {entry.name} has no default_version; "
                                            f"set version: to one of {', '.join(versions)}")])
    line = entry.marks.of_value(entry.base + ("default_version",))[0]
    raise InputError([marks.problem(at, f"no version given and {entry.name}'s default_version '{default}' "
                                        f"({entry.marks.file}:{line}) names no version; set version: to one "
                                        f"of {', '.join(versions)}, or fix default_version")])


def _manual(dep: Deployment, marks: Marks, at: tuple, fleet: Fleet, framework: str,
            problems: list[Problem]) -> tuple[tuple[str, int], ...]:
    pool: list[tuple[str, int]] = []
    for i, item in enumerate(dep.gpu_selection or ()):
        host_name, index_text = item.rsplit(":", 1)
        index = int(index_text)
        where = at + ("gpu_selection", i)
        host = fleet.host(host_name)
        if host is None:
            problems.append(marks.problem(where, f"unknown host '{host_name}'{did_you_mean(host_name, fleet.names())}"
                                                 f" in {fleet.file}"))
            continue
        group = next((g for g in host.groups if any(d.index == index for d in g.devices)
                      and g.framework == framework), None)
        if group is None:
            have = ", ".join(f"{g.vendor}:{d.index}" for g in host.groups for d in g.devices) or "no GPUs"
            problems.append(marks.problem(where, f"host '{host_name}' has no {framework} device {index} "
                                                 f"(it has {have})"))
            continue
        pool.append((host_name, index))
    needed = dep.replicas * dep.resources.gpu_count
    if len(pool) == len(dep.gpu_selection or ()) and needed > len(pool):
        problems.append(marks.problem(at + ("gpu_selection",),
                                      f"{dep.replicas} replicas × {dep.resources.gpu_count} GPUs need {needed} GPUs; "
                                      f"gpu_selection lists {len(pool)}"))
    return tuple(pool)


def _flatten(items, marks: Marks, where: tuple, problems: list[Problem]) -> list[str]:
    tokens: list[str] = []
    for i, item in enumerate(items):
        try:
            tokens += flatten_to_argv([item])
        except ParameterError as err:
            problems.append(marks.problem(where + (i,), str(err)))
    return tokens


_ROOTS_CACHE: dict[int, tuple[Fleet, dict, dict]] = {}


def _fleet_cache(fleet: Fleet) -> tuple[dict[tuple[str, ...], list], dict[str, str | None]]:
    """Hosts grouped by their model_roots, and what was found for each local path so far: worked out once
    per fleet (a stack has thousands of deployments, most sharing a few paths)."""
    got = _ROOTS_CACHE.get(id(fleet))
    if got is None or got[0] is not fleet:
        groups: dict[tuple[str, ...], list] = {}
        for h in fleet.hosts:
            groups.setdefault(h.model_roots, []).append(h)
        _ROOTS_CACHE.clear()
        got = _ROOTS_CACHE[id(fleet)] = (fleet, groups, {})
    return got[1], got[2]


def _local_path_problems(path: str, fleet: Fleet, marks: Marks, where: tuple) -> list[Problem]:
    """A local model is bind-mounted into the container: only from folders the inventory allows."""
    by_roots, reasons = _fleet_cache(fleet)
    if path not in reasons:
        reasons[path] = _local_path_reason(path, fleet, by_roots)
    reason = reasons[path]
    return [marks.problem(where, reason)] if reason else []


def _local_path_reason(path: str, fleet: Fleet, by_roots: dict[tuple[str, ...], list]) -> str | None:
    reason = system_path_reason(path)
    if reason:
        return (f"{reason} and cannot be mounted into a container; put the model under a model root of the "
                "inventory (model_roots, default: the model cache)")
    # a replica may land on any host, so every host must allow the folder (hosts share a few root sets)
    outside = [h for roots, hosts in by_roots.items() if not any(is_under(path, r) for r in roots) for h in hosts]
    if outside:
        roots = sorted({r for h in outside for r in h.model_roots})
        names = ", ".join(h.name for h in outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else "")
        return (f"'{path}' is not under a model root of {names} in {fleet.file} ({', '.join(roots)}); move the "
                "model there, or add its folder to model_roots in the inventory")
    return None


def _template(text: str | None, marks: Marks, path: tuple) -> Template | None:
    return Template(text, marks, path) if text else None


def _backend_template(entry: BackendEntry, text: str | None, version: str | None, key: str) -> Template | None:
    if not text:
        return None
    marks, path = entry.version_marks[version] if version else (entry.marks, entry.base)
    return Template(text, marks, path + (key,))


def _also_for(problems: list[Problem], marks: Marks, at: tuple) -> list[Problem]:
    """A template problem in a backend file also names the deployment that hit it."""
    out = []
    for p in problems:
        if p.file != marks.file:
            line, col = marks.of_value(at)
            out.append(Problem(marks.file, line, col, ".".join(str(x) for x in at),
                               f"uses {p.file}:{p.line}: {p.message}"))
        out.append(p)
    return out

