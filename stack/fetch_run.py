"""Run one model fetch on its host and say what happened: plain logic over two callables.

``stream(argv, stdin, on_line, timeout) -> status | None`` runs the fetch container and relays its
lines; ``run(argv) -> (status, out, err)`` runs short commands. Over paramiko in `pulumi up`
(components.model_fetch), against the real test hosts in the tests.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping

from documents.problems import printable

from .fetches import FetchSpec

Runner = Callable[[list[str]], tuple[int, str, str]]
Streamer = Callable[[list[str], bytes, Callable[[str], None], float], "int | None"]

PREFIX = "gpufleet-fetch "
TAIL = 20


class FetchFailed(Exception):
    """The model did not reach the host; the message is what an operator needs to act."""


@dataclass(frozen=True)
class Fetched:
    model_path: str
    #: GPUStack's derived context length from the model folder's config.json, None without one
    max_model_len: int | None


def run_fetch(stream: Streamer, run: Runner, spec: FetchSpec, secrets: Mapping[str, str],
              report: Callable[[str], None] = lambda line: None, where: str = "", progress_s: int = 10) -> Fetched:
    """Fetch, relay the fetch's own lines to ``report``; what the engine needs to know of the model."""
    missing = [key for _, key in spec.secret_env if not secrets.get(key)]
    if missing:
        raise FetchFailed(f"{spec.repo}{where}: secret {missing[0]!r} has no value; "
                          f"pulumi config set --secret {missing[0]} …")
    stdin = "".join(f"{var}={secrets[key]}\n" for var, key in spec.secret_env).encode()
    tail: deque[str] = deque(maxlen=TAIL)
    ours: list[str] = []

    def on_line(line: str) -> None:
        line = printable(line)
        tail.append(line)
        if line.startswith(PREFIX):
            ours.append(line[len(PREFIX):])
            report(f"{spec.repo}{where}: {line[len(PREFIX):]}")

    status = stream(spec.docker_run(progress_s), stdin, on_line, float(spec.timeout_s))
    if status is None:
        run(["docker", "rm", "--force", spec.container_name])
        last = next((m for m in reversed(ours) if m.startswith("progress:")), "no progress reported")
        raise FetchFailed(f"{spec.repo}{where}: not fetched within {spec.timeout_s} s ({last}); the partial "
                          "download stays in the cache and the next `pulumi up` resumes it; raise "
                          "model_fetch.timeout or fill the cache beforehand")
    errors = [m[len("error: "):] for m in ours if m.startswith("error: ")]
    if status != 0:
        if errors:
            raise FetchFailed(f"{spec.repo}{where}: {errors[-1]}")
        raise FetchFailed(f"{spec.repo}{where}: the fetch container exited with status {status} "
                          f"(image {spec.image}); last lines:\n" + "\n".join("  " + ln for ln in tail))
    resolved = [m[len("resolved: "):] for m in ours if m.startswith("resolved: ")]
    if not resolved:
        raise FetchFailed(f"{spec.repo}{where}: the fetch ended without naming the model's path; is {spec.image} "
                          "an image with python3 and huggingface_hub? last lines:\n"
                          + "\n".join("  " + ln for ln in tail))
    if spec.model_path is not None and resolved[-1] != spec.model_path:
        raise FetchFailed(f"{spec.repo}{where}: fetched to {resolved[-1]}, expected {spec.model_path}")
    lengths = [m[len("max_model_len: "):] for m in ours if m.startswith("max_model_len: ")]
    return Fetched(resolved[-1], int(lengths[-1]) if lengths and lengths[-1].isdigit() else None)
