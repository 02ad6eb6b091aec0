"""A local server that speaks the Hugging Face Hub's download protocol, for fetch tests.

Only what ``huggingface_hub`` (1.x) uses to fetch a model, as its client code calls it:

* ``GET /api/models/{repo}[/revision/{rev}]?blobs=true`` (``HfApi.model_info(files_metadata=True)``):
  ``{"id", "sha", "siblings": [{"rfilename", "size", "blobId"}]}``;
* ``HEAD /{repo}/resolve/{rev}/{file}`` (``get_hf_file_metadata``): ``X-Repo-Commit``, ``ETag``,
  ``Content-Length``; then ``GET`` of the same URL, with ``Range`` when resuming.
* gated repositories answer 401 with ``X-Error-Code: GatedRepo`` without a token that has
  access (``hf_raise_for_status`` turns that into ``GatedRepoError``), unknown ones 404 with
  ``X-Error-Code: RepoNotFound``.

And what ModelScope's SDK calls to list and read a model (``GET /api/v1/models/{id}/repo/files
?Revision=&Recursive=`` answering ``{"Data": {"Files": [{"Name", "Path", "Size", "Type"}]}}``, and
``GET /api/v1/models/{id}/repo?Revision=&FilePath=`` for a file, with ``Range``).

It counts requests, so tests can tell a cache hit (no download) from a download.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    sha: str = ""
    #: seconds a file download stalls after its first bytes (a slow mirror)
    stall_s: float = 0
    #: sizes the listings report instead of the content's (big weights without big test data)
    sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.sha = self.sha or hashlib.sha1(json.dumps(sorted(self.files)).encode()).hexdigest()


@dataclass
class HubServer:
    repos: dict[str, Repo]
    #: tokens that may read gated repositories
    tokens: set[str] = field(default_factory=set)
    requests: Counter = field(default_factory=Counter)
    address: str = "127.0.0.1"
    port: int = 0

    def __enter__(self) -> "HubServer":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _send(self, status: int, headers: dict[str, str], data: bytes, body: bool) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, status: int, code: str, message: str, body: bool) -> None:
                self._send(status, {"X-Error-Code": code, "X-Error-Message": message,
                                    "Content-Type": "application/json"},
                           json.dumps({"error": message}).encode(), body)

            def _repo(self, name: str, body: bool) -> Repo | None:
                repo = hub.repos.get(name)
                if repo is None:
                    self._error(404, "RepoNotFound", "Repository not found", body)
                    return None
                auth = self.headers.get("Authorization", "")
                if repo.gated and auth.removeprefix("Bearer ") not in hub.tokens:
                    self._error(401, "GatedRepo", f"Access to model {name} is restricted.", body)
                    return None
                return repo

            def _serve(self, body: bool) -> None:
                split = urlsplit(self.path)
                path = unquote(split.path)
                if path.startswith("/api/v1/models/"):  # ModelScope: its SDK's listing and download URLs
                    query = {k: v[0] for k, v in parse_qs(split.query).items()}
                    name = path[len("/api/v1/models/"):].split("/repo")[0]
                    if path.endswith("/repo/files"):
                        hub.requests[(self.command, path)] += 1
                        repo = self._repo(name, body)
                        if repo:
                            deep = query.get("Recursive", "false").lower() == "true"
                            files = [{"Name": n.rsplit("/", 1)[-1], "Path": n, "Size": repo.sizes.get(n, len(d)),
                                      "Type": "blob"} for n, d in sorted(repo.files.items()) if deep or "/" not in n]
                            files += [{"Name": f, "Path": f, "Size": 0, "Type": "tree"}
                                      for f in sorted({n.split("/")[0] for n in repo.files if "/" in n}) if not deep]
                            self._send(200, {"Content-Type": "application/json"},
                                       json.dumps({"Code": 200, "Data": {"Files": files}, "Success": True}).encode(),
                                       body)
                        return
                    # a download, counted as the Hub's resolve URL of the same file
                    path = f"/{name}/resolve/master/{query.get('FilePath', '')}"
                hub.requests[(self.command, path)] += 1
                if path.startswith("/api/models/") and "/tree/" in path:
                    # HfApi.list_repo_tree (non-recursive): the root's files and folders
                    name = path[len("/api/models/"):].split("/tree/")[0]
                    repo = self._repo(name, body)
                    if repo:
                        root = [{"type": "file", "path": n, "size": repo.sizes.get(n, len(d)),
                                 "oid": hashlib.sha1(d).hexdigest()}
                                for n, d in sorted(repo.files.items()) if "/" not in n]
                        root += [{"type": "directory", "path": d, "oid": "0" * 40}
                                 for d in sorted({n.split("/")[0] for n in repo.files if "/" in n})]
                        self._send(200, {"Content-Type": "application/json"}, json.dumps(root).encode(), body)
                    return
                if path.startswith("/api/models/"):
                    name = path[len("/api/models/"):].split("/revision/")[0]
                    repo = self._repo(name, body)
                    if repo:
                        info = {"id": name, "modelId": name, "sha": repo.sha, "private": False, "gated": repo.gated,
                                "siblings": [{"rfilename": n, "size": repo.sizes.get(n, len(d)),
                                              "blobId": hashlib.sha1(d).hexdigest()} for n, d in repo.files.items()]}
                        self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)
                    return
                if "/resolve/" not in path:
                    self._error(404, "EntryNotFound", "not found", body)
                    return
                name, rest = path.lstrip("/").split("/resolve/", 1)
                repo = self._repo(name, body)
                if repo is None:
                    return
                _, _, filename = rest.partition("/")
                data = repo.files.get(filename)
                if data is None:
                    self._error(404, "EntryNotFound", f"{filename} does not exist", body)
                    return
                headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                           "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
                start, end = 0, len(data)
                ranged = self.headers.get("Range", "")
                if ranged.startswith("bytes=") and body:
                    first, _, last = ranged[6:].partition("-")
                    start = int(first or 0)
                    end = min(len(data), int(last) + 1) if last else len(data)
                    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
                    hub.requests[("RANGE", path)] += 1
                if repo.stall_s and body:
                    self.send_response(206 if start else 200)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data) - start))
                    self.end_headers()
                    self.wfile.write(data[start:start + 1024])
                    self.wfile.flush()
                    time.sleep(repo.stall_s)
                    self.wfile.write(data[start + 1024:])
                    return
                self._send(206 if ranged.startswith("bytes=") and body else 200, headers, data[start:end], body)

        self.server = ThreadingHTTPServer((self.address, self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def downloads(self) -> int:
        """Whole files served (a GET of a resolve URL without Range)."""
        return sum(n - self.requests[("RANGE", path)] for (method, path), n in self.requests.items()
                   if method == "GET" and "/resolve/" in path)
