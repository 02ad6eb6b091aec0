"""A soak of placement on random fleets bigger than the property tests' (3-150 hosts, bench/synthetic.py's
CPU-and-memory workload at loads 0.7-1.6, some fleets of mixed vendors, binpack and spread): each plan must keep
every invariant (``check_invariants``: no device, host CPUs or memory over, selectors and spread honoured, ports
unique, every left-over replica explained over every host), and a second plan, made with the first one's lock
after edits that never invalidate a placed replica (a fifth of the deployments dropped, a fifth of the shared ones
asking half their VRAM, one host cordoned), must keep it too and keep every replica it can where it was (issue #10:
"a demand change that still fits where the replica is keeps it there"). Not collected by pytest: it runs for as
long as it is given, from a seed, and prints one JSON line per failure, then a summary.

    .venv/bin/python tests/soak.py --seconds 600 --seed 5000   # exit status 1 if any plan failed
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.synthetic import mixed_vendors, resource_demands, resource_fleet  # noqa: E402
from stack.lock import render_lock  # noqa: E402
from stack.placement import place  # noqa: E402
from tests.test_placement import read_lock_from_text  # noqa: E402
from tests.test_placement_properties import check_invariants  # noqa: E402


def one(seed: int) -> dict:
    """Two plans from ``seed``; what was drawn, and the failure if any (``error``)."""
    rnd = random.Random(seed)
    hosts = rnd.choice([3, 5, 8, 12, 20, 40, 80, 150])
    load = rnd.choice([0.7, 1.0, 1.3, 1.6])
    strategy = rnd.choice(["binpack", "binpack", "spread"])
    fleet = resource_fleet(hosts, seed)
    demands = resource_demands(fleet, seed + 1, load)
    if rnd.random() < 0.4:
        fleet, demands = mixed_vendors(fleet, demands, seed + 2)
    drawn = {"seed": seed, "hosts": hosts, "load": load, "strategy": strategy, "replicas": len(demands)}
    try:
        first = place(fleet, demands, strategy=strategy)
        drawn["placed"] = len(first.assignments)
        check_invariants(fleet, demands, first)
        prior = read_lock_from_text(render_lock("soak", first))
        deployments = sorted({d.deployment for d in demands})
        dropped = {x for x in deployments if rnd.random() < 0.2}
        halved = {x for x in deployments if rnd.random() < 0.2}
        edited = []
        for d in demands:
            if d.deployment in dropped:
                continue
            if d.deployment in halved and d.vram_mib:
                v = max(1024, d.vram_mib // 2 // 1024 * 1024)
                d = replace(d, vram_mib=v, min_vram_mib=min(d.min_vram_mib, v))
            edited.append(d)
        cordoned = rnd.choice(fleet.hosts).name
        fleet2 = replace(fleet, hosts=tuple(replace(h, state="cordoned") if h.name == cordoned else h
                                            for h in fleet.hosts))
        second = place(fleet2, edited, prior, strategy=strategy)
        check_invariants(fleet2, edited, second)
        before = first.by_key()
        now = second.by_key()
        for d in edited:
            b = before.get(d.key)
            if b is None or b.host == cordoned:
                continue
            a = now.get(d.key)
            assert a is not None, f"{d.key} was placed on {b.host} and is left over after edits that free room"
            assert (a.status, a.host, a.gpus, a.port) == ("kept", b.host, b.gpus, b.port), \
                f"{d.key} moved from {b.host} {b.gpus} :{b.port} to {a.host} {a.gpus} :{a.port} ({a.status})"
    except AssertionError as e:
        return {**drawn, "error": str(e)[:500]}
    except Exception:  # a crash is a failure too, with where it happened
        return {**drawn, "error": traceback.format_exc()[-1500:]}
    return drawn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=5000)
    args = ap.parse_args()
    end, seed, plans, failed = time.monotonic() + args.seconds, args.seed, 0, 0
    while time.monotonic() < end:
        got = one(seed)
        plans += 1
        if "error" in got:
            failed += 1
            print(json.dumps(got), flush=True)
        seed += 1
    print(json.dumps({"plan_pairs": plans, "failed": failed, "seeds": [args.seed, seed - 1]}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
