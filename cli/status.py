"""``gpufleet status --stack S``: what runs on the hosts against the plan; the health gate after `pulumi up`."""
from __future__ import annotations

import json
import sys

from stack.plan import build_plan
from stack.project import find_root, load_project

EXIT_STATUS = 6


def register(sub) -> None:
    p = sub.add_parser("status", help="compare what runs on the hosts with the plan (a health gate for CI)",
                       description="List gpufleet's containers of the stack on every host over SSH, compare them with "
                                   "the plan and the lock (missing, unexpected, stale, stopped, restarting, "
                                   "unhealthy), request each replica's health path from its host, and show GPU "
                                   "memory in use beside what the plan claims. Exit 0 when all is as planned, 6 "
                                   "otherwise.")
    p.add_argument("--stack", required=True, metavar="S")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--timeout", type=float, default=10, help="connect timeout per host, seconds (default 10)")
    p.set_defaults(run=cmd_status)


def _host(host, stack: str, specs, timeout: float):
    from inventory.host_state import containers, endpoint_answers, gpu_memory_used
    from inventory.ssh import Endpoint, connect
    from stack.status import health_url

    client = connect(Endpoint.of(host), timeout=timeout)
    try:
        found = containers(client, stack)
        running = {o.name for o in found if o.state == "running" and o.health in ("healthy", "none")}
        answers = {s.name: endpoint_answers(client, health_url(s)) for s in specs
                   if s.name in running and health_url(s)}
        return found, answers, gpu_memory_used(client)
    finally:
        client.close()


def cmd_status(args) -> int:
    import concurrent.futures  # and logging with it: imported by the command that uses threads

    from inventory.ssh import HostUnreachable  # paramiko: imported by the commands that use SSH
    from stack.status import compare  # and the containers' rendering with it: not imported by every command

    root = args.root or find_root()
    project = load_project(args.stack, root)
    plan = build_plan(project)
    timeout = max(1.0, min(args.timeout, 10.0))
    by_host = {}
    for c in plan.containers:
        by_host.setdefault(c.host, []).append(c)
    hosts = [h for h in plan.hosts if h.name in by_host or h.active]
    observed, unreachable, endpoints, gpu_used = {}, {}, {}, {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(64, len(hosts)))) as pool:
        futures = {pool.submit(_host, h, plan.stack, by_host.get(h.name, []), timeout): h for h in hosts}
        tty = sys.stderr.isatty() and not args.json
        for n, done in enumerate(concurrent.futures.as_completed(futures), 1):
            if tty:
                print(f"\rchecking {n}/{len(futures)} hosts", end="", file=sys.stderr, flush=True)
            h = futures[done]
            try:
                found, answers, used = done.result()
            except HostUnreachable as err:
                unreachable[h.name] = str(err).split(": ", 1)[-1]
                continue
            except (OSError, EOFError) as err:  # reached, but Docker (or the session) failed
                unreachable[h.name] = f"Docker does not answer: {err}"
                continue
            observed[h.name], gpu_used[h.name] = found, used
            endpoints.update(answers)
    if sys.stderr.isatty() and not args.json:
        print(file=sys.stderr)
    findings = compare(list(plan.containers), observed, unreachable, endpoints)
    problems = [f for f in findings if f.problem]
    claimed = {}
    for a in plan.placement.assignments:
        for g in a.gpus:
            claimed.setdefault(a.host, {})[g] = claimed.get(a.host, {}).get(g, 0) + a.vram_mib
    if args.json:
        print(json.dumps({
            "stack": plan.stack, "ok": not problems,
            "findings": [f.__dict__ for f in findings],
            "hosts": [{"host": h.name, "reachable": h.name not in unreachable,
                       "containers": [o.__dict__ for o in observed.get(h.name, [])],
                       "gpu_memory_used_mib": gpu_used.get(h.name), "gpu_memory_claimed_mib": claimed.get(h.name, {})}
                      for h in hosts]}, indent=2, default=str))
    else:
        running = sum(o.state == "running" for found in observed.values() for o in found)
        print(f"stack {plan.stack}: {len(plan.containers)} replicas planned, {running} running on "
              f"{len(observed)} reachable hosts, {len(unreachable)} unreachable")
        for f in findings:
            print(f"  {f.kind:<11} {f.message}")
        for h in hosts:
            used = gpu_used.get(h.name)
            if used:
                mine = claimed.get(h.name, {})
                print(f"  gpus {h.name}: " + ", ".join(f"{i}: {used[i]} MiB used / {mine.get(i, 0)} MiB claimed"
                                                      for i in sorted(used)))
        print("ok" if not problems else f"{len(problems)} problem(s)", file=sys.stderr)
    return EXIT_STATUS if problems else 0
