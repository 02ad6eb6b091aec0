"""A minimal Docker Engine API client over SSH, for the fleet tests.

It reaches a test host the way the docker CLI's ssh:// helper (and so the provider) does:
``ssh <options> <host> docker system dial-stdio`` bridges stdin/stdout to the remote engine's
socket, and one HTTP/1.1 request with ``Connection: close`` is written through it.  The tests
need the Engine API itself, not the CLI, because the CLI cannot express every input the
provider sends (an exec-form health check, for one).
"""
from __future__ import annotations

import http.client
import json
import subprocess
import urllib.parse
from typing import Any

API = "/v1.41"


class DockerApiError(AssertionError):
    def __init__(self, status: int, body: str):
        super().__init__(f"Docker API answered {status}: {body}")
        self.status = status


class _Pipe:
    """What http.client.HTTPResponse needs of a socket: a readable file."""

    def __init__(self, stream):
        self._stream = stream

    def makefile(self, mode: str):
        return self._stream


class DockerApi:
    def __init__(self, ssh_argv: list[str]):
        """``ssh_argv``: the full ssh command up to and including the destination."""
        self.ssh_argv = ssh_argv

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None,
                timeout: float = 120, raw: bytes | None = None, content_type: str = "application/json") -> Any:
        url = API + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        payload = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {url} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
        proc = subprocess.Popen([*self.ssh_argv, "docker", "system", "dial-stdio"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(head + payload)
            proc.stdin.flush()
            response = http.client.HTTPResponse(_Pipe(proc.stdout), method=method)  # type: ignore[arg-type]
            response.begin()
            data = response.read()
        finally:
            proc.kill()
            proc.wait(timeout=timeout)
        if response.status < 300 and response.getheader("Content-Type", "").startswith("application/x-tar"):
            return data
        text = data.decode(errors="replace")
        if response.status >= 300:
            raise DockerApiError(response.status, text)
        return json.loads(text) if text.strip() else None

    # -- the few calls the tests use
    def create(self, name: str, body: dict) -> str:
        return self.request("POST", "/containers/create", body, {"name": name})["Id"]

    def start(self, ident: str) -> None:
        self.request("POST", f"/containers/{ident}/start")

    def inspect(self, ident: str) -> dict:
        return self.request("GET", f"/containers/{ident}/json")

    def remove(self, ident: str) -> None:
        try:
            self.request("DELETE", f"/containers/{ident}", query={"force": "true", "v": "true"})
        except DockerApiError as err:
            if err.status != 404:
                raise

    def put_archive(self, ident: str, path: str, tar: bytes) -> None:
        self.request("PUT", f"/containers/{ident}/archive", query={"path": path}, raw=tar,
                     content_type="application/x-tar")

    def get_archive(self, ident: str, path: str) -> bytes:
        return self.request("GET", f"/containers/{ident}/archive", query={"path": path})

    def image(self, name: str) -> dict:
        return self.request("GET", f"/images/{urllib.parse.quote(name, safe='')}/json")
