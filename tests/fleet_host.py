"""A real GPU-less host for the fleet tests: an OpenSSH server on a loopback address whose sessions
reach a private Docker engine, plus a tiny busybox image made with ``docker import``.

Everything is started by the test session and stopped after it; nothing touches the machine's
own Docker or SSH.  It needs root and Debian's docker.io, openssh-server and busybox-static,
which .ci/run installs.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

IMAGE = "gpufleet-test/busybox:1"
TOOLS = ("dockerd", "docker", "sshd", "ssh", "ssh-keygen", "busybox")


def missing_tools() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [t for t in TOOLS if shutil.which(t, path=path) is None]


@dataclass
class FleetHost:
    address: str
    folder: Path
    identity: Path
    known_hosts: Path
    docker_socket: Path

    def local_docker(self, *args: str, check: bool = True, timeout: int = 60) -> subprocess.CompletedProcess:
        """The engine directly, for setup and cleanup (tests go through SSH)."""
        return subprocess.run(["docker", "-H", f"unix://{self.docker_socket}", *args], capture_output=True,
                              text=True, check=check, timeout=timeout)


def _wait(check, what: str, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    tail = log.read_text()[-2000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {seconds:.0f}s; log tail:\n{tail}")


def _listening(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((address, port)) == 0


def _busybox_tar(folder: Path) -> Path:
    tar = folder / "busybox.tar"
    with tarfile.open(tar, "w") as t:
        t.add(shutil.which("busybox"), arcname="bin/busybox")
        for tool in ("sh", "httpd", "wget", "cat", "touch", "sleep"):
            info = tarfile.TarInfo(f"bin/{tool}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(info)
    return tar


class FleetHostProcess:
    """Starts and stops the daemons of one FleetHost."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="gf-", dir="/tmp"))  # short: unix socket paths
        self.procs: list[subprocess.Popen] = []

    def start(self, tools: dict[str, str] | None = None, runtimes: tuple[str, ...] = (),
              docker_socket: Path | None = None) -> FleetHost:
        """``tools``: fake accelerator tools for this host's PATH, name (or "name subcommand") -> the
        recorded output they print;
        ``runtimes``: extra Docker runtime names (as a vendor toolkit registers them), backed by runc;
        ``docker_socket``: share another host's engine instead of starting one (many light hosts for the bench)."""
        d = self.folder
        bin_dir = d / "bin"
        bin_dir.mkdir(exist_ok=True)
        by_tool: dict[str, dict[str, str]] = {}  # "amd-smi static": what `amd-smi static ...` prints
        for key, output in (tools or {}).items():
            name, _, sub = key.partition(" ")
            by_tool.setdefault(name, {})[sub] = output
        for name, outputs in by_tool.items():
            lines = ["#!/bin/sh", 'case "$1" in']
            for sub, output in outputs.items():
                out = d / f"{name}.{sub or 'any'}.out"
                out.write_text(output)
                lines.append(f"  {sub or '*'}) exec cat {out} ;;")
            lines += [f'  *) echo "{name}: no recorded output for $1" >&2; exit 2 ;;', "esac"]
            (bin_dir / name).write_text("\n".join(lines) + "\n")
            (bin_dir / name).chmod(0o755)
        sock = docker_socket or d / "docker.sock"
        host = FleetHost("", d, d / "id_ed25519", d / "known_hosts", sock)
        if docker_socket is None:
            log = d / "dockerd.log"
            self.procs.append(subprocess.Popen(
                ["dockerd", "--host", f"unix://{sock}", "--data-root", str(d / "data"), "--exec-root", str(d / "x"),
                 "--pidfile", str(d / "docker.pid"), "--bridge", "none", "--iptables=false",
                 *[f"--add-runtime={r}={shutil.which('runc', path='/usr/sbin:/usr/bin:/sbin:/bin')}"
                   for r in runtimes]],
                stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True))
            _wait(lambda: host.local_docker("version", check=False, timeout=10).returncode == 0, "dockerd", log)
            with _busybox_tar(d).open("rb") as tar:
                subprocess.run(["docker", "-H", f"unix://{sock}", "import", "-", IMAGE], stdin=tar, check=True,
                               capture_output=True, timeout=120)

        for key in ("host_ed25519", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(d / key)], check=True)
        (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        sshd_log = d / "sshd.log"
        for _ in range(20):  # a free loopback address for this session
            address = f"127.0.{random.randint(10, 13)}.{random.randint(100, 250)}"
            if not _listening(address, 22):
                break
        (d / "sshd_config").write_text(
            f"ListenAddress {address}:22\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            # few unauthenticated connections at once, as on a busy host: the shared connection must cope
            "MaxStartups 3:100:3\n"
            f"SetEnv DOCKER_HOST=unix://{sock} PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin\n")
        self.procs.append(subprocess.Popen([shutil.which("sshd", path="/usr/sbin:/sbin:" + os.environ["PATH"]),
                                            "-D", "-e", "-f", str(d / "sshd_config")],
                                           stdout=sshd_log.open("w"), stderr=subprocess.STDOUT,
                                           start_new_session=True))
        _wait(lambda: _listening(address, 22), "sshd", sshd_log, 20)
        host_key = (d / "host_ed25519.pub").read_text().split()[:2]
        (d / "known_hosts").write_text(f"{address} {' '.join(host_key)}\n")
        host.address = address
        self.host = host
        return host

    def kill_sshd(self) -> None:
        """A fault: this host stops answering SSH."""
        self._kill("sshd")

    def kill_dockerd(self) -> None:
        """A fault: SSH works, Docker does not."""
        self._kill("dockerd")

    def _kill(self, name: str) -> None:
        for proc in self.procs:
            if os.path.basename(str(proc.args[0])) == name and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    def stop(self) -> None:
        sock = self.folder / "docker.sock"  # only this host's own engine
        if sock.exists():
            ids = subprocess.run(["docker", "-H", f"unix://{sock}", "ps", "-aq"], capture_output=True,
                                 text=True, timeout=30).stdout.split()
            if ids:
                subprocess.run(["docker", "-H", f"unix://{sock}", "rm", "-f", *ids], capture_output=True, timeout=60)
        for proc in reversed(self.procs):
            if proc.poll() is not None:
                continue  # already gone (a fault test killed it)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            except ProcessLookupError:
                pass
        _unmount_below(self.folder)  # dockerd leaves its netns bind mount behind
        shutil.rmtree(self.folder, ignore_errors=True)


def _unmount_below(folder: Path) -> None:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(str(folder) + "/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.fleet_host up N``: N test hosts for a developer, until Ctrl-C.

    Prints an inventory for them (with their known_hosts and key) and keeps them running.
    """
    import sys

    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2 or args[0] != "up" or not args[1].isdigit():
        print("usage: python -m tests.fleet_host up N", file=sys.stderr)
        return 2
    procs = [FleetHostProcess() for _ in range(int(args[1]))]
    try:
        hosts = [p.start() for p in procs]
        print("hosts:")
        for i, h in enumerate(hosts):
            print(f"  - {{name: test-{i}, address: {h.address}, ssh: {{user: root, identity_file: {h.identity}, "
                  f"known_hosts: {h.known_hosts}}}}}")
        print("# Ctrl-C stops them", file=sys.stderr)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            p.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
