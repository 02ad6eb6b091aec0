"""The container health check really works, with curl, wget, python3 or only bash in the image.

The CMD-SHELL script is run by /bin/sh against a live HTTP server on loopback, with PATH
reduced to one tool at a time, as in images that lack the others.
"""
from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stack.containers import health_check
from stack.schema import Health

TOOLS = {"curl": ["curl"], "wget": ["wget"], "python3": [], "bash": ["bash", "head", "grep"]}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path == "/v1/models" else 503)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()


def _bin(tmp_path: Path, tool: str) -> Path:
    folder = tmp_path / f"bin-{tool}"
    folder.mkdir()
    names = TOOLS[tool]
    for name in names:
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed here (.ci/run installs curl and wget)")
        (folder / name).symlink_to(found)
    if tool == "python3":
        (folder / "python3").symlink_to(sys.executable)
    return folder


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_health_check_passes_and_fails_with_one_tool(tmp_path, server, tool):
    folder = _bin(tmp_path, tool)
    env = {"PATH": str(folder)}
    healthy = health_check("127.0.0.1", server, "/v1/models", Health())
    sick = health_check("127.0.0.1", server, "/not-ready", Health())
    assert healthy.test[0] == "CMD"
    ok = subprocess.run(list(healthy.test[1:]), env=env, timeout=20)
    bad = subprocess.run(list(sick.test[1:]), env=env, timeout=20)
    assert ok.returncode == 0
    assert bad.returncode != 0


def test_health_check_fails_when_nothing_listens(tmp_path):
    folder = _bin(tmp_path, "bash")
    closed = health_check("127.0.0.1", 9, "/v1/models", Health())
    result = subprocess.run(list(closed.test[1:]), env={"PATH": str(folder)}, timeout=20)
    assert result.returncode != 0
    assert os.path.exists("/bin/sh")


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_health_check_target_is_data_never_shell_text(tmp_path, tool):
    """Whatever the target, the shell program is the same constant text; the target is an argument.

    A target full of shell metacharacters (it cannot pass the inventory's address check, but the
    health check must not depend on that) is handed to each tool as a value and runs nothing.
    """
    folder = _bin(tmp_path, tool)
    (folder / "touch").symlink_to(shutil.which("touch"))
    marker = tmp_path / "pwned"
    hostile = f"127.0.0.1;touch {marker};$(touch {marker})`touch {marker}`"
    check = health_check(hostile, 9, f"/x;touch${{IFS}}{marker}", Health())
    plain = health_check("127.0.0.1", 40000, "/v1/models", Health())
    assert check.test[:5] == plain.test[:5]  # same program
    assert hostile in check.test[5:] or any(hostile in arg for arg in check.test[5:])
    result = subprocess.run(list(check.test[1:]), env={"PATH": str(folder)}, cwd=tmp_path, timeout=20)
    assert result.returncode != 0
    assert not marker.exists()
