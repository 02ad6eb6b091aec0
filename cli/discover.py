"""``gpufleet discover ADDRESS...``: inventory entries for new hosts, read from the hosts."""
from __future__ import annotations

import sys
from pathlib import Path



def register(sub) -> None:
    p = sub.add_parser("discover", help="print inventory entries for hosts, read over SSH",
                       description="Connect to each address, read CPUs, memory and accelerators (with UUIDs and "
                                   "PCI bus ids), and print inventory host entries ready to append under hosts:. "
                                   "With --known-hosts FILE, keys of hosts not yet in it are fetched, their "
                                   "fingerprints shown and the keys recorded; a changed key is refused.")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--user", default="root")
    p.add_argument("--port", type=int, default=22)
    p.add_argument("--identity", default=None, metavar="FILE")
    p.add_argument("--known-hosts", type=Path, default=None, metavar="FILE")
    p.add_argument("--timeout", type=float, default=10)
    p.set_defaults(run=cmd_discover)


def cmd_discover(args) -> int:
    from inventory.discover import discover, inventory_yaml  # paramiko: imported by the commands that use SSH
    from inventory.ssh import HostUnreachable

    found, failed = [], 0
    for address in args.addresses:
        try:
            d = discover(address, args.user, args.port, args.identity, args.known_hosts, min(args.timeout, 10.0))
        except HostUnreachable as err:
            print(f"{address}: {str(err).split(': ', 1)[-1]}", file=sys.stderr)
            failed += 1
            continue
        if d.fingerprint:
            print(f"recorded {address} in {args.known_hosts}: {d.fingerprint} (compare with `ssh-keygen -lf "
                  "/etc/ssh/ssh_host_ed25519_key.pub` on the host)", file=sys.stderr)
        found.append(d)
    if found:
        print(inventory_yaml(found, args.user, args.port, args.identity,
                             str(args.known_hosts) if args.known_hosts else None), end="")
    return 5 if failed else 0
