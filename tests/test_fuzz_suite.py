"""The fuzz suite: at least 10,000 structured mutations of the shipped files every run.

Every input must either load (and then place and render without error) or fail with
``InputError`` whose problems are each one printable line located at file:line:col, within a
bounded time and without the process growing without bound.  A run picks a new base seed
(``GPUFLEET_FUZZ_SEED`` fixes it; ``GPUFLEET_FUZZ_CASES`` sets the count); an input that
breaks a rule is written to ``tests/fuzz_regressions/`` (commit it with the fix) and
``test_fuzz_regressions_stay_fixed`` replays every file there on every run.
"""
from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import time
from pathlib import Path

import pytest

from backends.catalog import load_catalog
from components.model_deployment import container_args
from documents.problems import InputError
from inventory.fleet import load_fleet
from stack.containers import render_container
from stack.demands import demands_for
from stack.lock import read_lock
from stack.placement import place
from stack.project import load_project, load_stack_file
from stack.workloads import resolve

from .conftest import ROOT
from .fuzzing import KINDS, make_case

REGRESSIONS = ROOT / "tests" / "fuzz_regressions"
CASES = int(os.environ.get("GPUFLEET_FUZZ_CASES", "10000"))
#: generous: a case takes milliseconds; this only catches hangs (an alias bomb took 12 s, some never ended)
PER_CASE_SECONDS = 10


class _Hang(Exception):
    pass


class Harness:
    """Loads one input of a kind the way the CLI and the program do, all the way to container inputs."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "stack").mkdir()
        (folder / "inventory").mkdir()
        shutil.copy(ROOT / "inventory" / "demo.yaml", folder / "inventory" / "demo.yaml")
        shutil.copy(ROOT / "inventory" / "known_hosts.demo", folder / "inventory" / "known_hosts.demo")
        self.catalog = load_catalog([ROOT / "backends"], ROOT)
        self.demo = load_project("demo", ROOT)
        self.paths = {"backend": folder / "spec.yaml", "inventory": folder / "inventory" / "fuzz.yaml",
                      "stack": folder / "stack" / "fuzz.yaml", "lock": folder / "stack" / "fuzz.lock.yaml"}

    def load(self, kind: str, text: str) -> None:
        path = self.paths[kind]
        path.write_text(text, encoding="utf-8", errors="surrogatepass") if _encodable(text) else \
            path.write_bytes(text.encode("utf-8", errors="replace"))
        if kind == "backend":
            # with one built-in beside it, so "custom versions for a built-in" is exercised too
            load_catalog([ROOT / "backends" / "vllm" / "spec.yaml", path], ROOT)
        elif kind == "inventory":
            fleet = load_fleet(path, "inventory/fuzz.yaml")
            self._place(self.demo.workloads, fleet, {})
        elif kind == "stack":
            stack, marks = load_stack_file(path, self.folder)
            if stack.inventory != "../inventory/demo.yaml":
                return  # another inventory path: the stack file itself was read and checked
            workloads = resolve(stack, marks, self.catalog, self.demo.fleet)
            self._place(workloads, self.demo.fleet, {}, stack)
        else:
            prior = read_lock(path, "stack/fuzz.lock.yaml", "demo")
            self._place(self.demo.workloads, self.demo.fleet, prior)

    def _place(self, workloads, fleet, prior, settings=None) -> None:
        placement = place(fleet, demands_for(workloads), prior)
        by_name = {w.name: w for w in workloads}
        for a in placement.assignments:
            spec = render_container("fuzz", by_name[a.deployment], a, fleet.host(a.host),
                                    settings or self.demo.stack)
            container_args(spec, spec.image, {key: "x" for _, key in spec.secret_env})


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def check_one(harness: Harness, kind: str, text: str) -> str | None:
    """None when the input behaved; else what went wrong, in a sentence."""
    def on_alarm(signum, frame):
        raise _Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, PER_CASE_SECONDS)
    try:
        harness.load(kind, text)
    except InputError as err:
        for p in err.problems:
            line = str(p)
            if "\n" in line or not line.isprintable():
                return f"a problem is not one printable line: {line!r}"
            if not p.file or p.line < 1 or p.col < 1:
                return f"a problem is not located at file:line:col: {line!r}"
            if "Input should" in p.message or "pydantic" in p.message.lower():
                return f"library wording reached the user: {line!r}"
    except _Hang:
        return f"took more than {PER_CASE_SECONDS} s"
    except Exception as err:  # noqa: BLE001 - anything else is the bug this suite looks for
        return f"{type(err).__name__}: {err}"[:500]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return None


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Harness:
    return Harness(tmp_path_factory.mktemp("fuzz"))


def test_fuzz_structured_mutations_of_every_file_kind(harness):
    base = int(os.environ.get("GPUFLEET_FUZZ_SEED", random.SystemRandom().randrange(2 ** 32)))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    failures, counts, start = [], {k: 0 for k in KINDS}, time.monotonic()
    for n in range(CASES):
        kind = KINDS[n % len(KINDS)]
        case = make_case(kind, base + n)
        counts[kind] += 1
        problem = check_one(harness, kind, case.text)
        if problem:
            REGRESSIONS.mkdir(exist_ok=True)
            saved = REGRESSIONS / f"{kind}-{case.seed}.yaml"
            saved.write_bytes(case.text.encode("utf-8", errors="replace"))
            failures.append(f"{kind} seed {case.seed} ({case.operation}): {problem} -> saved {saved.name}")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert not failures, (f"base seed {base} (GPUFLEET_FUZZ_SEED={base} reproduces); {len(failures)} of {CASES} "
                          "inputs misbehaved:\n" + "\n".join(failures[:20]))
    assert sum(counts.values()) >= 10_000 or CASES < 10_000
    assert all(counts.values()), counts
    assert grown_mib < 1024, f"the process grew by {grown_mib:.0f} MiB over {CASES} inputs"
    print(f"fuzz: {CASES} inputs from seed {base} in {time.monotonic() - start:.1f} s, {counts}")


REGRESSION_FILES = sorted(REGRESSIONS.glob("*.yaml")) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("path", REGRESSION_FILES, ids=[p.name for p in REGRESSION_FILES])
def test_fuzz_regressions_stay_fixed(harness, path):
    kind = path.name.split("-", 1)[0]
    assert kind in KINDS, f"{path.name} must start with one of {KINDS}"
    text = path.read_bytes().decode("utf-8", errors="replace")
    assert check_one(harness, kind, text) is None
