"""The Pulumi program: load the stack's files, plan, build components, export.

Everything that can be wrong with the input is found before the first resource is
registered: invalid files, missing secrets and unplaced replicas fail the preview with
file:line messages and nothing is created.
"""
from __future__ import annotations

from pathlib import Path

import pulumi

from documents.problems import InputError, Problem
from inventory.ssh import Endpoint
from stack.plan import Plan, build_plan
from stack.project import Project, find_root, load_project

from .gpu_host import GpuHost, GpuHostArgs, ensure_control_dir
from .model_deployment import ModelDeployment, ModelDeploymentArgs
from .model_fetch import ModelFetch

CONFIG = "gpufleet"


def run(root: Path | None = None) -> dict[str, pulumi.Output]:
    """Build the stack; returns what it exports (tests use it under mocks)."""
    pulumi.runtime.register_stack_transformation(require_explicit_provider)
    cfg = pulumi.Config(CONFIG)
    project, plan, secrets = _load_and_plan(cfg, root or find_root(Path.cwd()))
    _check(plan, cfg)
    _log(plan)
    _compare_with_applied(plan, cfg)
    _build(plan, secrets)
    return _export(plan)


def require_explicit_provider(args: pulumi.ResourceTransformationArgs):
    """Every docker resource names its host's provider: none may fall back to a default provider.

    A default docker provider talks to the engine on the machine running Pulumi (a laptop, a CI
    runner): a model server there is never what anyone meant. This holds whatever the stack's
    ``pulumi:disable-default-providers`` says.
    """
    if args.type_.startswith("docker:") and args.opts.provider is None and not args.opts.providers:
        raise pulumi.RunError(f"{args.type_} '{args.name}' has no explicit docker provider; gpufleet never uses "
                              "the default provider (it would reach the Docker engine of the machine running "
                              "Pulumi); nothing was changed")
    return None


def _load_and_plan(cfg: pulumi.Config, root: Path) -> tuple[Project, Plan, dict[str, pulumi.Output[str]]]:
    """Load every file, place, render; any input problem fails the preview before a resource exists."""
    try:
        stack_file = cfg.get("stackFile")
        project = load_project(str(root / stack_file) if stack_file else pulumi.get_stack(), root)
        lock = cfg.get("lockFile")
        plan = build_plan(project, root / lock if lock else None)
        return project, plan, _secrets(project, plan, cfg)
    except InputError as err:
        raise pulumi.RunError(_problems_text(err.problems)) from None


def _flag(cfg: pulumi.Config, key: str) -> bool:
    try:
        return bool(cfg.get_bool(key))
    except pulumi.ConfigTypeError:
        raise pulumi.RunError(f"config {CONFIG}:{key} must be true or false, got '{cfg.get(key)}'; "
                              "nothing was changed") from None


def _check(plan: Plan, cfg: pulumi.Config) -> None:
    """A stale lock or unplaced replicas fail the preview unless the stack explicitly allows them.

    The lock is what reviewers approved: applying a placement the lock does not record would move
    replicas nobody reviewed, and the next plan would not know where they run.
    """
    allow_unplaced = _flag(cfg, "allowUnplaced")
    if plan.placement.unplaced and not allow_unplaced:
        raise pulumi.RunError(
            f"{len(plan.placement.unplaced)} replica(s) cannot be placed; nothing was changed:\n"
            + "\n".join(u.message for u in plan.placement.unplaced)
            + f"\n(set `pulumi config set {CONFIG}:allowUnplaced true` to deploy the rest anyway)")
    if plan.lock_stale and not _flag(cfg, "allowStaleLock"):
        raise pulumi.RunError(
            f"{plan.lock_file} is missing or does not match this placement; nothing was changed. Run "
            f"`gpufleet lock --stack {plan.stack}`, review and commit the lock (or set `pulumi config set "
            f"{CONFIG}:allowStaleLock true` to apply the placement anyway)")


def _compare_with_applied(plan: Plan, cfg: pulumi.Config) -> None:
    """Say where the lock disagrees with what this stack last applied (its own `placement` output).

    The lock in git is the prior placement; if it no longer records where replicas really run
    (an up with allowStaleLock, a hand edit, a lost commit), later plans would move running
    replicas nobody reviewed. The stack's own state is read back through a StackReference to
    itself; a stack that was never applied has nothing to compare. ``gpufleet:compareState:
    false`` turns this off.
    """
    try:
        enabled = cfg.get_bool("compareState")
    except pulumi.ConfigTypeError:
        enabled = True
    if enabled is False:
        return
    name = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    applied = pulumi.StackReference(f"{plan.stack}-applied", stack_name=name).get_output("placement")
    locked = placement_output(plan)

    def report(previous) -> None:
        for line in state_differences(previous, locked, plan.lock_file):
            pulumi.log.warn(line)

    applied.apply(report)


def state_differences(applied: dict | None, locked: dict, lock_file: str) -> list[str]:
    """Replicas whose applied place (host, GPUs, port) differs from the lock's; nothing before the first up."""
    if not applied:
        return []
    # Pulumi hands numbers back as floats: 40000.0 is port 40000
    applied = {k: {"host": v.get("host"), "gpus": [int(g) for g in v.get("gpus") or []], "port": int(v.get("port", 0))}
               for k, v in applied.items() if isinstance(v, dict)}
    out = []
    for key in sorted(set(applied) | set(locked)):
        was, now = applied.get(key), locked.get(key)
        if was == now:
            continue
        if now is None:
            out.append(f"{key} runs on {was['host']} (last up) but is not in {lock_file}: this up removes it")
        elif was is None:
            out.append(f"{key} is in {lock_file} on {now['host']} but the last up did not run it: this up adds it")
        else:
            out.append(f"{key} ran on {was['host']} gpus {was['gpus']} port {was['port']} (last up); {lock_file} "
                       f"places it on {now['host']} gpus {now['gpus']} port {now['port']}")
    if out:
        out.insert(0, f"the stack's last applied placement and {lock_file} differ in {len(out)} replica(s); if this "
                      "change did not intend it, the lock no longer records where replicas run")
    return out


def _build(plan: Plan, secrets: dict[str, pulumi.Output[str]]) -> None:
    """One GpuHost per host that runs something, one ModelDeployment per deployment."""
    used = plan.images_by_host()
    if used:
        ensure_control_dir()
    pull = max((c.pull_timeout_s for c in plan.containers), default=3600)
    hosts = {h.name: GpuHost(h.name, GpuHostArgs(h, tuple(used[h.name]), secrets, pull))
             for h in plan.hosts if h.name in used}
    by_deployment: dict[str, list] = {}
    for c in plan.containers:
        by_deployment.setdefault(c.deployment, []).append(c)
    # one fetch per (host, model): replicas of several deployments of one model on a host share it
    fetches = {}
    for c in plan.containers:
        if c.fetch is not None and c.fetch.key not in fetches:
            host = hosts[c.host]
            fetches[c.fetch.key] = ModelFetch(
                f"{c.host}-fetch-{c.fetch.container_name[len('gpufleet-fetch-'):]}", Endpoint.of(host.host), c.fetch,
                secrets, opts=pulumi.ResourceOptions(
                    parent=host, additional_secret_outputs=["secrets"],
                    # the fetch has its own time limit (model_fetch.timeout); the engine's margin on top
                    custom_timeouts=pulumi.CustomTimeouts(create=f"{c.fetch.timeout_s + 300}s",
                                                          update=f"{c.fetch.timeout_s + 300}s")))
    for name, containers in by_deployment.items():
        ModelDeployment(name, ModelDeploymentArgs(tuple(containers), hosts, secrets, plan.max_unavailable, fetches))


def placement_output(plan: Plan) -> dict:
    """The `placement` stack output: per replica, host, GPUs and port (what the next preview compares)."""
    return {a.key: {"host": a.host, "gpus": list(a.gpus), "port": a.port} for a in plan.placement.assignments}


def _export(plan: Plan) -> dict[str, pulumi.Output]:
    outputs = {
        "placement": placement_output(plan),
        "endpoints": plan.endpoints(),
        "unplaced": [u.message for u in plan.placement.unplaced],
    }
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs


def _secrets(project: Project, plan: Plan, cfg: pulumi.Config) -> dict[str, pulumi.Output[str]]:
    """Every secret:NAME the plan uses, read as a Pulumi secret; missing ones are input problems."""
    wanted: dict[str, tuple[str, str]] = {}
    for c in plan.containers:
        for var, key in c.secret_env:
            wanted.setdefault(key, (c.deployment, var))
    fetch_keys = {key for c in plan.containers if c.fetch for _, key in c.fetch.secret_env}
    used_hosts = {c.host for c in plan.containers}
    registry_keys = {r.password_key: r.address for h in plan.hosts if h.name in used_hosts for r in h.registries}
    out, problems = {}, []
    for key, (deployment, var) in sorted(wanted.items()):
        value = cfg.get_secret(key)
        if value is None:
            path = ("deployments", deployment, "env", var)
            if var not in project.stack.deployments[deployment].env:
                path = ("deployments", deployment)
            problems.append(project.stack_marks.problem(
                path, f"secret '{key}' is not set for stack '{pulumi.get_stack()}'; run: "
                      f"pulumi config set --secret {key} <value>"))
        else:
            out[key] = value
    for key in sorted(fetch_keys - set(wanted)):
        value = cfg.get_secret(key)
        if value is None:
            problems.append(project.stack_marks.problem(
                ("model_fetch", "hf_token"), f"secret '{key}' is not set for stack '{pulumi.get_stack()}'; run: "
                                             f"pulumi config set --secret {key} <value>"))
        else:
            out[key] = value
    for key, address in sorted(registry_keys.items()):
        value = cfg.get_secret(key)
        if value is None:
            problems.append(Problem(project.fleet.file, 0, 0, "", f"the password of registry {address} (secret "
                                    f"'{key}') is not set for stack '{pulumi.get_stack()}'; run: pulumi config set "
                                    f"--secret {key} <value>"))
        else:
            out[key] = value
    if problems:
        raise InputError(problems)
    return out


def _problems_text(problems: list[Problem]) -> str:
    n = len(problems)
    return "\n".join(str(p) for p in problems) + f"\ngpufleet: {n} problem{'s' if n != 1 else ''}; nothing was changed"


def _log(plan: Plan) -> None:
    """The placement as one message: one engine call, however many replicas."""
    p = plan.placement
    statuses = [a.status for a in p.assignments]
    lines = [f"gpufleet placement for stack {plan.stack} ({p.strategy}): {len(p.assignments)} replicas "
             f"({statuses.count('kept')} kept, {statuses.count('new')} new, {statuses.count('moved')} moved), "
             f"{len(p.removed)} removed, {len(p.unplaced)} unplaced"]
    for a in p.assignments:
        gpus = ",".join(map(str, a.gpus)) or "-"
        note = f" (moved: {a.reason}; was on {a.previous_host})" if a.status == "moved" else ""
        lines.append(f"  {a.key} -> {a.host} gpus {gpus} port {a.port} [{a.status}]{note}")
    lines += [f"  {r.key} removed from {r.host}" for r in p.removed]
    pulumi.log.info("\n".join(lines))
    for u in p.unplaced:
        pulumi.log.warn(u.message)
    for note in plan.notes:
        pulumi.log.info(f"note: {note}")
    if plan.lock_stale:
        pulumi.log.warn(f"{plan.lock_file} is missing or does not match this placement; run `gpufleet lock --stack "
                        f"{plan.stack}` and commit it, so the next preview keeps replicas where this one puts them")
