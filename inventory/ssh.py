"""SSH sessions to fleet hosts with paramiko: the inventory's known_hosts only, the inventory's key only.

Used where gpufleet itself talks to hosts (the health gate, probe, status), as opposed to the
docker provider, which runs OpenSSH with ``components.gpu_host.ssh_options``. Both trust exactly
the same things: the host key must be in the inventory's known_hosts (an unknown or changed key
is refused), and only the inventory's identity file is offered.
"""
from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass

import paramiko


class HostUnreachable(Exception):
    """The host could not be reached or did not prove its identity; the message says which."""


@dataclass(frozen=True)
class Endpoint:
    """What an SSH session needs of a host: plain data, so it can travel to a dynamic provider."""

    name: str
    address: str
    port: int
    user: str
    known_hosts: str | None
    identity_file: str | None

    @classmethod
    def from_props(cls, props: dict) -> "Endpoint":
        """From a dynamic resource's inputs as the engine hands them back: None-valued keys may be absent."""
        return cls(**{name: props.get(name) for name in cls.__dataclass_fields__})

    @classmethod
    def of(cls, host) -> "Endpoint":
        return cls(host.name, host.address, host.ssh.port, host.ssh.user, host.ssh.known_hosts,
                   host.ssh.identity_file)


class _Socket:
    """A TCP connection to an SSH server that does not wait on acknowledgements.

    SSH is a conversation of small messages. An OpenSSH server sends them with Nagle's algorithm on
    (it turns it off only for terminal sessions), so its second message in a row waits until the
    first is acknowledged, and Linux delays acknowledgements by up to 40 ms: each session opened and
    each command's exit cost 40 to 80 ms on a loopback host (measured: open 42 ms -> 1 ms, the whole
    connection 64 ms -> 20 ms). So this side sends at once (TCP_NODELAY) and acknowledges at once
    (TCP_QUICKACK, which Linux resets after a while: set again around every read)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._quick = getattr(socket, "TCP_QUICKACK", None)

    def recv(self, size: int) -> bytes:
        if self._quick is not None:
            self._sock.setsockopt(socket.IPPROTO_TCP, self._quick, 1)
        data = self._sock.recv(size)
        if self._quick is not None and data:
            self._sock.setsockopt(socket.IPPROTO_TCP, self._quick, 1)
        return data

    def __getattr__(self, name):  # send, settimeout, close, getpeername...: the socket's own
        return getattr(self._sock, name)


def open_socket(address: str, port: int, timeout: float):
    """The TCP connection paramiko runs SSH over (``_Socket``); OSError when the host cannot be reached."""
    return _Socket(socket.create_connection((address, port), timeout=timeout))


def connect(endpoint: Endpoint, timeout: float = 10) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if endpoint.known_hosts:
        try:
            client.load_host_keys(os.path.expanduser(endpoint.known_hosts))
        except OSError as err:
            raise HostUnreachable(f"{endpoint.name}: cannot read known_hosts {endpoint.known_hosts}: "
                                  f"{err.strerror}") from None
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        sock = open_socket(endpoint.address, endpoint.port, timeout)
        client.connect(endpoint.address, endpoint.port, endpoint.user, sock=sock,
                       key_filename=os.path.expanduser(endpoint.identity_file) if endpoint.identity_file else None,
                       look_for_keys=False, allow_agent=False, timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout)
    except paramiko.BadHostKeyException:
        client.close()
        raise HostUnreachable(f"{endpoint.name}: the host key of {endpoint.address} CHANGED since it was recorded "
                              f"in {endpoint.known_hosts}; refusing to connect (check the host, then update "
                              "known_hosts)") from None
    except paramiko.SSHException as err:
        client.close()
        if "not found in known_hosts" in str(err):
            where = endpoint.known_hosts or "any known_hosts"
            raise HostUnreachable(f"{endpoint.name}: {endpoint.address} is not in {where}; record its key first "
                                  "(ssh-keyscan, check the fingerprint)") from None
        raise HostUnreachable(f"{endpoint.name}: SSH to {endpoint.address}:{endpoint.port} failed: {err}") from None
    except (OSError, socket.timeout) as err:
        client.close()
        raise HostUnreachable(f"{endpoint.name}: cannot reach {endpoint.address}:{endpoint.port}: "
                              f"{getattr(err, 'strerror', None) or err}") from None
    return client


#: what one command may print (stdout and stderr together) before it is cut off: the probe's whole script
#: prints a few KiB per device; a wedged tool that prints without end must not fill the memory
OUTPUT_LIMIT = 16 * 1024 * 1024


class CommandFailed(OSError):
    """A command ran too long or printed too much; the session is closed (its process gets a hang-up).
    ``out``: what it printed on stdout until then."""

    def __init__(self, message: str, out: str = ""):
        super().__init__(message)
        self.out = out


def run(client: paramiko.SSHClient, argv: list[str], timeout: float = 30,
        limit: int = OUTPUT_LIMIT, what: str | None = None) -> tuple[int, str, str]:
    """Run one command (argv, quoted for the remote shell); returns exit status, stdout, stderr.

    Bounded: the whole command within ``timeout`` seconds (not only each read: a tool that prints a
    byte a second would never trip a read timeout) and at most ``limit`` bytes of output, else
    ``CommandFailed`` (``what`` names the command in its message). A host's wedged nvidia-smi hangs or
    floods; the caller reports it and goes on."""
    import select
    import time

    what = what or f"`{argv[0]}`"
    deadline = time.monotonic() + timeout
    channel = client.get_transport().open_session(timeout=timeout)
    try:
        channel.exec_command(shlex.join(argv))
        out, err = bytearray(), bytearray()
        while True:
            while channel.recv_ready() and len(out) + len(err) <= limit:  # a flood never keeps this loop going
                out += channel.recv(65536)
            while channel.recv_stderr_ready() and len(out) + len(err) <= limit:
                err += channel.recv_stderr(65536)
            if len(out) + len(err) > limit:
                raise CommandFailed(f"{what} printed more than {limit // (1024 * 1024)} MiB; stopped",
                                    out.decode(errors="replace"))
            if channel.exit_status_ready() and channel.eof_received and not channel.recv_ready() \
                    and not channel.recv_stderr_ready():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandFailed(f"{what} did not finish within {timeout:g} s; stopped",
                                    out.decode(errors="replace"))
            select.select([channel], [], [], min(left, 0.05))  # wakes on output; stderr within 50 ms
        return channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
    finally:
        channel.close()


def stream(client: paramiko.SSHClient, argv: list[str], stdin: bytes, on_line, timeout: float,
           clock=None) -> int | None:
    """Run a long command, feed it ``stdin``, hand each output line (stdout and stderr merged) to
    ``on_line`` as it comes; the exit status, or None when ``timeout`` seconds passed first (the
    session is then closed; the caller stops what the command started)."""
    import time

    clock = clock or time.monotonic
    channel = client.get_transport().open_session()
    try:
        channel.set_combine_stderr(True)
        channel.settimeout(1.0)
        channel.exec_command(shlex.join(argv))
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        deadline = clock() + timeout
        pending = b""
        while True:
            try:
                data = channel.recv(65536)
            except socket.timeout:
                data = None
            if data:
                pending += data
                *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
                for line in lines:
                    if line.strip():
                        on_line(line.decode(errors="replace"))
            elif data == b"":  # end of output
                if pending.strip():
                    on_line(pending.decode(errors="replace"))
                return channel.recv_exit_status()
            if clock() >= deadline:
                return None
    finally:
        channel.close()
