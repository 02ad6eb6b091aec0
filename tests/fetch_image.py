"""A fetch image for the test hosts, made without a registry: this machine's own Python.

The stack's real fetch image (GPUStack's) cannot be pulled here. This one holds what a fetch
needs and nothing else: the interpreter running the tests (at its own path, with its shared
libraries), its standard library, and huggingface_hub with the packages it imports, from the
test environment. Imported into a test host's engine with ``docker import``.
"""
from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

IMAGE = "gpufleet-test/fetch:1"
#: huggingface_hub 1.x and what it imports to list and download files
PACKAGES = ("huggingface_hub", "httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi", "filelock",
            "fsspec", "packaging", "tqdm", "typing_extensions", "yaml")
SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__pycache__"}


def _libraries(files: list[str]) -> set[str]:
    """Shared libraries the files load, by ldd (with the dynamic loader), followed to real files."""
    out = subprocess.run(["ldd", *files], capture_output=True, text=True).stdout
    found = set()
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/") and os.path.exists(word):
                found.add(word)
    return found


def _add(tar: tarfile.TarFile, path: str, arcname: str | None = None) -> None:
    """A file at its own absolute path (symlinks kept, their targets added too)."""
    name = (arcname or path).lstrip("/")
    if name in tar.getnames():
        return
    if os.path.islink(path):
        target = os.readlink(path)
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        tar.addfile(info)
        _add(tar, os.path.realpath(path))
        return
    tar.add(path, arcname=name, recursive=False)


def _tree(tar: tarfile.TarFile, root: str, arc_root: str) -> None:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP and not d.startswith("config-")]
        for f in files:
            src = os.path.join(folder, f)
            _add(tar, src, os.path.join(arc_root, os.path.relpath(src, root)))


def build_tar(dest: Path) -> Path:
    exe = os.path.realpath(sys.executable)
    stdlib = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"]
    dynload = os.path.join(stdlib, "lib-dynload")
    modules = [os.path.join(dynload, f) for f in os.listdir(dynload)
               if not f.startswith("_tkinter")] if os.path.isdir(dynload) else []
    tar_path = dest / "fetch-image.tar"
    with tarfile.open(tar_path, "w") as tar:
        # libraries and the interpreter as plain files at the paths the loader looks for
        # (on merged-/usr systems /lib and /lib64 are links; the image has none of them)
        libs = _libraries([exe, *modules])
        # glibc dlopens libgcc_s when a thread exits (ldd does not list it)
        libc = next(p for p in libs if os.path.basename(p).startswith("libc.so"))
        libs |= {str(p) for p in Path(libc).parent.glob("libgcc_s.so*")}
        for path in sorted(libs) + [exe]:
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"), recursive=False)
        _tree(tar, stdlib, stdlib)
        for name in PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                continue
            if spec.submodule_search_locations:
                _tree(tar, list(spec.submodule_search_locations)[0], f"/opt/hub/{name}")
            else:
                _add(tar, spec.origin, f"/opt/hub/{os.path.basename(spec.origin)}")
        for folder, mode in (("tmp", 0o1777), ("root", 0o700), ("usr/local/bin", 0o755)):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        link = tarfile.TarInfo("usr/local/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, exe
        tar.addfile(link)
        # Python finds its prefix from the binary's path; keep it out of any user site
        marker = b"# the fetch image's packages\n"
        info = tarfile.TarInfo("opt/hub/README")
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker))
    return tar_path


def import_into(docker: list[str], dest: Path) -> str:
    """``docker``: the engine's CLI prefix, e.g. ``["docker", "-H", "unix://…"]``."""
    with build_tar(dest).open("rb") as tar:
        subprocess.run([*docker, "import", "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin",
                        "--change", "ENV PYTHONPATH=/opt/hub", "--change", "ENV HOME=/root", "-", IMAGE],
                       stdin=tar, check=True, capture_output=True, timeout=300)
    return IMAGE
