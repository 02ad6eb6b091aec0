"""The gpufleet command line: validate, catalog, help texts, exit codes, the README's commands."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

from .conftest import ROOT


def test_validate_whole_repo(cli):
    result = cli("--root", ROOT, "validate")
    assert result.code == 0, result.err
    assert result.out.strip() == "ok: 10 backends, 1 inventory, 1 stack"


def test_validate_reports_every_problem_across_files(cli, tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("hosts:\n  - name: x\n    address: 127.0.40.1\n    lables: {}\n")
    b = tmp_path / "b.yaml"
    b.write_text("backend_name: q-custom\nversion_configs: {v: {image_name: i, custom_framework: gpu}}\n")
    result = cli("--root", ROOT, "validate", a, b)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert lines[0].startswith(f"{a}:4:5: hosts[0].lables: unknown key 'lables' (did you mean 'labels'?)")
    assert lines[1].startswith(f"{b}:2:56: version_configs.v.custom_framework: 'gpu' is not one of")
    assert lines[2] == "gpufleet: 2 problems; nothing was changed"


def test_catalog_json(cli):
    result = cli("--root", ROOT, "catalog", "--json")
    assert result.code == 0
    rows = {r["backend"]: r for r in json.loads(result.out)["backends"]}
    assert rows["vLLM"]["source"] == "built-in"
    assert {"version": "cpu", "framework": "cpu", "image": "ghcr.io/ggml-org/llama.cpp:server"} in \
        rows["llama.cpp"]["versions"]


def test_catalog_table_marks_defaults(cli):
    result = cli("--root", ROOT, "catalog")
    assert result.code == 0
    assert re.search(r"^vLLM\s+built-in\s+v0\.16\.0 \(default\)\s+cuda\s+vllm/vllm-openai:v0\.16\.0$", result.out,
                     re.M)


def test_console_script_help_and_exit_codes():
    exe = [sys.executable, "-m", "cli.main"]
    out = subprocess.run(exe + ["--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "validate" in out.stdout and "Exit status" in out.stdout
    for command in ("validate", "catalog", "plan", "lock"):
        sub = subprocess.run(exe + [command, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert sub.returncode == 0 and "usage: gpufleet " + command in sub.stdout, command
    bad = subprocess.run(exe + ["validate", "tests/malformed/s01-unknown-backend.yaml"], capture_output=True,
                         text=True, cwd=ROOT)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert "gpufleet plan --stack demo" in main_job
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_validate_and_plan_agree_on_a_dropped_catalog_and_count_backends(tmp_path):
    import shutil

    root = tmp_path / "p"
    for name in ("backends", "inventory", "stack"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copy(ROOT / "Pulumi.yaml", root)
    shutil.copy(ROOT / "tests" / "data" / "gpustack" / "gpustack-community-catalog.yaml", root / "backends")
    from .conftest import run_cli as cli

    one = cli("--root", root, "validate", root / "backends" / "gpustack-community-catalog.yaml")
    assert one.code == 0, one.err
    assert one.out.strip() == "ok: 8 backends, 0 inventories, 0 stacks"  # backends in the file, not 1 path
    assert "note: backends/gpustack-community-catalog.yaml:" in one.err and "replaces the shipped backend" in one.err
    # the catalog's Kokoro-FastAPI defaults to its GPU version: the demo's CPU-only deployment that
    # relied on the shipped default now fails, and validate and plan say the same thing
    whole = cli("--root", root, "validate")
    plan = cli("--root", root, "plan", "--stack", "demo")
    assert whole.code == plan.code == 2
    expected = "stack/demo.yaml:59:23: deployments.kokoro-tts.resources.gpus: version 'latest-gpu' of Kokoro-FastAPI"
    assert expected in whole.err and expected in plan.err


def test_validate_json(cli, tmp_path):
    good = cli("--root", ROOT, "validate", "--json")
    assert good.code == 0 and json.loads(good.out)["counts"] == {"backends": 10, "inventories": 1, "stacks": 1}
    bad_file = tmp_path / "a.yaml"
    bad_file.write_text("hosts:\n  - name: x\n    address: 127.0.40.1\n    lables: {}\n")
    bad = cli("--root", ROOT, "validate", "--json", bad_file)
    report = json.loads(bad.out)
    assert bad.code == 2 and not report["ok"]
    (problem,) = [p for p in report["problems"] if p["field"] == "hosts[0].lables"]
    assert (problem["line"], problem["col"]) == (4, 5) and problem["message"].startswith("unknown key 'lables'")


def test_tables_are_plain_in_a_pipe_and_coloured_on_a_terminal():
    from cli.tables import render_table

    rows = [("a/0", "moved (host_cordoned; was on h1)"), ("[bold]x[/bold]", "kept")]
    plain = render_table(("REPLICA", "STATUS"), rows, tty=False)
    assert "\x1b[" not in plain
    assert plain.splitlines()[0].split() == ["REPLICA", "STATUS"]
    assert "[bold]x[/bold]" in plain  # file values are text, never markup
    coloured = render_table(("REPLICA", "STATUS"), rows, tty=True)
    assert "\x1b[33m" in coloured and "moved" in coloured  # yellow for moved
    assert "[bold]x[/bold]" in coloured


def test_planning_imports_no_ssh_http_or_round_trip_yaml():
    """Every command pays for what the CLI imports at start-up: SSH (paramiko, 0.1 s), HTTP, ruamel and threads
    (concurrent.futures, with logging: 3 ms) and rendering containers (5 ms) are imported by the commands that use
    them, and the models' field descriptions are read from their source only when a schema is asked for."""
    script = ("import sys\nfrom cli.main import main\n"
              f"code = main(['--root', {str(ROOT)!r}, 'plan', '--stack', 'demo', '--no-lock', '--json'])\n"
              "import documents.fields as f\n"
              "print(code, sorted(m for m in ('paramiko', 'urllib.request', 'ruamel.yaml', 'concurrent.futures', "
              "'stack.containers') if m in sys.modules), "
              "f._described)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] in ("0 [] False", "3 [] False"), out.stdout[-500:] + out.stderr[-2000:]


def test_the_command_flushes_all_it_printed_and_keeps_its_exit_status():
    """``gpufleet`` ends with os._exit (cli.main.run): whatever was printed must still reach the reader, in full,
    and the exit status must be main's; a reader that stops early gets no error from gpufleet."""
    run = [sys.executable, "-c", "from cli.main import run; run()", "--root", str(ROOT)]
    # buffered, as a user's terminal or pipe is (this sandbox sets PYTHONUNBUFFERED, under which nothing waits)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = subprocess.run(run + ["plan", "--stack", "demo", "--no-lock", "--json"], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    inside = subprocess.run([sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())",
                             "--root", str(ROOT), "plan", "--stack", "demo", "--no-lock", "--json"],
                            capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == inside.returncode and out.returncode in (0, 3), out.stderr[-2000:]
    assert json.loads(out.stdout) == json.loads(inside.stdout)
    bad = subprocess.run(run + ["plan", "--stack", "no-such-stack"], capture_output=True, text=True, cwd=ROOT,
                         env=env)
    assert bad.returncode == 2 and "nothing was changed" in bad.stderr
    # a reader that takes one byte and goes: the rest is dropped without a word
    early = subprocess.run(f"{shlex.join(run)} plan --stack demo --no-lock --json | head -c 1", shell=True,
                           capture_output=True, text=True, cwd=ROOT, env=env)
    assert early.stdout == "{" and "Error" not in early.stderr and "Exception" not in early.stderr, early.stderr
