"""Regression tests for hostile or broken input: every case found by fuzzing and by hand (issue 7).

Each case must end in exit status 2 with one located line per problem, quickly, without a
traceback, a hang or a crash. Cases that used to crash the interpreter run in a subprocess.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends.render import Template, Variables, render
from documents.problems import InputError, Problem
from documents.yaml_reader import Marks, parse_yaml, read_yaml
from inventory.sizes import parse_mib
from stack.lock import read_lock
from stack.placement import place
from stack.placement.model import Claim, Demand, LockedReplica

from .conftest import ROOT
from .fleets import fleet as make_fleet
from .fleets import gpus, host

INVENTORY = """hosts:
  - name: gpu-1
    address: 127.0.20.1
    accelerators:
      - {vendor: nvidia, model: NVIDIA A100-SXM4-80GB, vram: 80GiB, count: 2}
"""


def _problem_lines(err: str) -> list[str]:
    lines = err.rstrip("\n").split("\n")
    assert lines[-1].endswith("nothing was changed"), err
    return lines[:-1]


def _assert_clean(result, *expected: str) -> list[str]:
    """Exit 2, no traceback, every line printable and located, and each expected text present."""
    assert result.code == 2, result.out + result.err
    assert "Traceback" not in result.err
    lines = _problem_lines(result.err)
    for line in lines:
        assert line.isprintable(), repr(line)
    for text in expected:
        assert text in result.err, result.err
    return lines


def _stack(tmp_path: Path, deployment: str, inventory: str = INVENTORY) -> Path:
    (tmp_path / "inv.yaml").write_text(inventory)
    path = tmp_path / "s.yaml"
    path.write_text("inventory: inv.yaml\ndeployments:\n" + deployment)
    return path


# ----------------------------------------------------------------------------- YAML structure

def test_self_referencing_alias(tmp_path, cli):
    path = tmp_path / "x.yaml"
    path.write_text("hosts: &a\n  - *a\n")
    _assert_clean(cli("--root", ROOT, "validate", path), ":2:5:", "refers to the value that contains it")


@pytest.mark.parametrize("depth", [1_000, 50_000])
def test_deeply_nested_lists_are_refused_in_a_subprocess(tmp_path, depth):
    path = tmp_path / "deep.yaml"
    path.write_text("hosts: " + "[" * depth + "]" * depth + "\n")
    result = subprocess.run([sys.executable, "-m", "cli.main", "--root", str(ROOT), "validate", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)  # a hang fails the test
    assert result.returncode == 2, result.stderr  # not -11 (SIGSEGV)
    assert f"{path}:1:" in result.stderr and "nested more than 64 levels" in result.stderr


def test_deeply_nested_mappings_are_refused(tmp_path, cli):
    path = tmp_path / "deep.yaml"
    path.write_text("hosts: " + "{a: " * 40_000 + "1" + "}" * 40_000 + "\n")
    _assert_clean(cli("--root", ROOT, "validate", path), "nested more than 64 levels")


@pytest.mark.parametrize("levels", [4, 8, 30])
def test_alias_bombs_are_refused_at_the_alias(tmp_path, cli, levels):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    result = cli("--root", ROOT, "validate", path)
    if levels == 4:  # 9^5 = 59,049 values: within bounds, just not a valid file
        assert result.code == 2 and "alias bomb" not in result.err
        return
    (line,) = _assert_clean(result, "alias bomb")
    assert line.startswith(f"{path}:") and ":1:" not in line.split(": ")[0][-4:]


def test_a_229_byte_bomb_is_refused_fast():
    text = ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
            'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
            'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n'
            'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n')
    with pytest.raises(InputError) as err:
        parse_yaml(text, "bomb.yaml")
    assert "alias bomb" in str(err.value) and err.value.problems[0].line == 7


@pytest.mark.parametrize("text, message", [
    ("count: !!int abc\n", "'abc' is tagged !!int but is not a whole number"),
    ("flag: !!bool maybe\n", "'maybe' is tagged !!bool but is not true or false"),
    ("x: !!float xyz\n", "'xyz' is tagged !!float but is not a number"),
    ("x: !!binary aGVsbG8=\n", "the tag !!binary is not accepted"),
    ("x: !!python/object:os.system ls\n", "the tag !!python/object:os.system is not accepted"),
    ("x: !custom 1\n", "the tag !custom is not accepted"),
    ("x: " + "9" * 5000 + "\n", "is out of range"),
    ("x: 1.0e+400\n", "is not a finite number"),
    ("x: .nan\n", "is not a finite number"),
])
def test_tags_and_numbers_outside_the_core_schema(text, message):
    with pytest.raises(InputError) as err:
        parse_yaml(text, "t.yaml")
    (problem,) = err.value.problems
    assert problem.line == 1 and message in problem.message, problem


def test_dates_stay_text():
    data, _ = parse_yaml("version: 2024-01-01\n", "t.yaml")
    assert data == {"version": "2024-01-01"}


def test_merge_keys_still_work():
    data, _ = parse_yaml("base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  y: 3\n", "t.yaml")
    assert data["thing"] == {"x": 1, "y": 3}


@pytest.mark.parametrize("value", ["1" + "0" * 400 + "GiB", 10 ** 30, "99999999999999999999TiB"])
def test_huge_sizes_are_out_of_range(value):
    with pytest.raises(ValueError, match="out of range"):
        parse_mib(value)


# ----------------------------------------------------------------------------- files

def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "stack.yaml"
    os.mkfifo(fifo)
    # in a subprocess: a read that blocked on the FIFO would never return; the timeout fails the test instead
    result = subprocess.run([sys.executable, "-m", "cli.main", "--root", str(ROOT), "validate", str(fifo)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2 and "a FIFO (named pipe), not a regular file" in result.stderr


def test_device_and_folder_are_refused(tmp_path, cli):
    _assert_clean(cli("--root", ROOT, "validate", "/dev/zero"), "/dev/zero: this is a device")
    with pytest.raises(InputError, match="this is a folder"):
        read_yaml(tmp_path, "inv")


def test_symlink_loop_and_long_path(tmp_path, cli):
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    _assert_clean(cli("--root", ROOT, "validate", tmp_path / "a.yaml"), "a loop of symbolic links")
    _assert_clean(cli("--root", ROOT, "validate", tmp_path / ("x" * 5000 + ".yaml")), "path is too long")


def test_oversized_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (17 * 1024 * 1024) + "\n")
    with pytest.raises(InputError, match="the limit is 16,777,216"):
        read_yaml(path)


def test_inventory_naming_a_folder_is_located_in_the_stack_file(tmp_path, cli):
    (tmp_path / "inv").mkdir()
    path = tmp_path / "s.yaml"
    path.write_text("deployments: {}\ninventory: inv\n")
    (line,) = _assert_clean(cli("--root", ROOT, "validate", path))
    assert line.startswith(f"{path}:2:12: inventory: 'inv' is a folder")


def test_lock_into_a_missing_folder(cli):
    result = cli("--root", ROOT, "lock", "--stack", "demo", "--lock", "no/such/folder/x.lock.yaml")
    _assert_clean(result, "the folder no/such/folder does not exist")


# ----------------------------------------------------------------------------- messages

def test_control_characters_are_located_and_never_echoed(tmp_path, cli):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"hosts:\n  - name: a\x1b[31mb\n")
    (line,) = _assert_clean(cli("--root", ROOT, "validate", path), ":2:12:", "U+001B")
    assert "\x1b" not in line


def test_escaped_control_characters_in_values_are_refused_and_shown_escaped(tmp_path, cli):
    path = _stack(tmp_path, '  a:\n    backend: "vLLM\\e[2J\\r\\nfake: ok"\n    model: {huggingface: o/m}\n')
    result = cli("--root", ROOT, "validate", path)
    lines = _assert_clean(result)
    assert all("\x1b" not in ln and "\r" not in ln for ln in lines)
    assert any("\\x1b[2J\\r\\nfake" in ln for ln in lines), result.err


@pytest.mark.parametrize("field, value", [
    ("image", '"img\\0:1"'), ("image", '"img\\n:1"'), ("env", '{A: "x\\ey"}'), ("env", '{A: "x\\ny"}'),
    ("model", '{local_path: "/srv/m\\0"}'), ("model_name", '"a\\x1bb"'), ("backend_parameters", '["--x\\x07"]'),
])
def test_control_characters_refused_in_fields_that_reach_a_container(tmp_path, cli, field, value):
    dep = f"  a:\n    backend: vLLM\n    model: {{huggingface: o/m}}\n    {field}: {value}\n"
    if field == "model":
        dep = f"  a:\n    backend: vLLM\n    model: {value}\n"
    path = _stack(tmp_path, dep)
    lines = _assert_clean(cli("--root", ROOT, "validate", path), "control character")
    assert any(f"deployments.a.{field}" in ln for ln in lines)


@pytest.mark.parametrize("where, value", [
    ("labels", '{zone: "a\\nb"}'), ("ssh", '{user: "root\\n"}'), ("ssh", "{user: 'ro ot'}"),
    ("ssh", '{identity_file: "/k\\0"}'), ("model_cache", '"/srv/\\e[m"'),
])
def test_control_characters_refused_in_the_inventory(tmp_path, cli, where, value):
    path = tmp_path / "inv.yaml"
    path.write_text(INVENTORY + f"    {where}: {value}\n")
    lines = _assert_clean(cli("--root", ROOT, "validate", path))
    assert any(f"hosts[0].{where}" in ln for ln in lines), lines


@pytest.mark.parametrize("address", ["127.0.0.1;touch${IFS}pwned", "$(reboot)", "a b", "host_1.example", "-oProxyCommand=x",
                                     "999.1.1.1.1", "[::1];x", "010.0.0.1", "256.0.0.1"])
def test_addresses_must_be_ip_or_dns_names(tmp_path, cli, address):
    path = tmp_path / "inv.yaml"
    path.write_text(INVENTORY.replace("127.0.20.1", f"'{address}'"))
    _assert_clean(cli("--root", ROOT, "validate", path), "hosts[0].address")


def test_an_address_is_kept_as_ipaddress_writes_it():
    """Canonical IPv4 addresses skip parsing (a fleet has thousands): they must be exactly what parsing gives."""
    import ipaddress

    from documents.fields import _address

    for text in ("0.0.0.0", "9.10.99.100", "127.0.20.1", "199.200.249.250", "255.255.255.255", "::1", "FD00::5"):
        assert _address(text) == str(ipaddress.ip_address(text))
    assert _address("[fd00::5]") == "fd00::5"


@pytest.mark.parametrize("address", ["127.0.20.9", "gpu-01.example.com", "::1", "fd00::5"])
def test_good_addresses_pass(tmp_path, cli, address):
    path = tmp_path / "inv.yaml"
    (tmp_path / "known_hosts").write_text(f"{address} ssh-ed25519 "
                                          "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    path.write_text(INVENTORY.replace("127.0.20.1", f"'{address}'").replace(
        "hosts:", f"defaults: {{ssh: {{known_hosts: {tmp_path / 'known_hosts'}}}}}\nhosts:"))
    result = cli("--root", ROOT, "validate", path)
    assert result.code == 0, result.err


def test_validate_flags_a_missing_known_hosts_file_or_entry(tmp_path, cli):
    path = tmp_path / "inv.yaml"
    path.write_text(INVENTORY)
    (line,) = _assert_clean(cli("--root", ROOT, "validate", path), "no known_hosts file")
    assert f"{path}:2:5: hosts.gpu-1.ssh.known_hosts" in line
    (tmp_path / "kh").write_text("127.0.20.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    path.write_text(INVENTORY.replace("hosts:", f"defaults: {{ssh: {{known_hosts: {tmp_path / 'kh'}}}}}\nhosts:"))
    _assert_clean(cli("--root", ROOT, "validate", path), "127.0.20.1 has no key in", "ssh-keyscan -p 22 127.0.20.1")


@pytest.mark.parametrize("path, text", [
    ("/var/run/docker.sock", "system folder /var/run"), ("/run/containerd/containerd.sock", "system folder /run"),
    ("/", "'/' is a system folder"), ("/etc", "'/etc' is a system folder"), ("/srv/x/docker.sock", "socket"),
    ("/srv/elsewhere/model", "is not under a model root of gpu-1"), ("/srv/models/../../etc", "must not contain '..'"),
])
def test_local_path_mounts_are_allowed_not_assumed(tmp_path, cli, path, text):
    inventory = INVENTORY.replace("hosts:", "defaults: {model_roots: [/srv/models]}\nhosts:")
    stack = _stack(tmp_path, f"  a:\n    backend: llama.cpp\n    version: cuda\n    model: {{local_path: '{path}'}}\n",
                   inventory)
    lines = _assert_clean(cli("--root", ROOT, "validate", stack), text)
    assert any("deployments.a.model.local_path" in ln for ln in lines), lines


def test_model_roots_cannot_be_system_folders(tmp_path, cli):
    path = tmp_path / "inv.yaml"
    path.write_text(INVENTORY.replace("hosts:", "defaults: {model_roots: [/var/run]}\nhosts:"))
    _assert_clean(cli("--root", ROOT, "validate", path), "defaults.model_roots[0]: '/var/run' is a system folder")


@pytest.mark.parametrize("text, expected", [
    ("  a: {backend: vLLM, model: BAAI/bge-m3}\n",
     "deployments.a.model: must be a mapping (key: value lines), got the text 'BAAI/bge-m3'; write {huggingface: "
     "ORG/NAME}, {modelscope: ORG/NAME} or {local_path: /abs/path}"),
    ("  a: {backend: vLLM, model: {huggingface: o/m}, resources: {gpus: -1}}\n",
     "deployments.a.resources.gpus: must be a GPU count from 0 to 64, or auto; got -1"),
    ("  a: {backend: vLLM, model: {hf: o/m}}\n",
     "unknown key 'hf'; valid keys: huggingface, huggingface_filename, modelscope, model_scope_file_path, local_path"),
])
def test_messages_in_our_words(tmp_path, cli, text, expected):
    lines = _assert_clean(cli("--root", ROOT, "validate", _stack(tmp_path, text)), expected)
    assert not any("Input should" in ln or "valid dictionary" in ln for ln in lines)


def test_a_tab_is_called_a_tab(tmp_path, cli):
    path = tmp_path / "inv.yaml"
    path.write_text("hosts:\n\t- name: x\n")
    (line,) = _assert_clean(cli("--root", ROOT, "validate", path), ":2:1:", "a tab")
    assert "cannot start any token" not in line


# ----------------------------------------------------------------------------- templates

VARS = Variables("m", "n", 1, "127.0.0.1", 1, "0", {})


@pytest.mark.parametrize("text, message", [
    ("{{9**(9**9)}}", "the operator '**'"),
    ("'{{ \"x\" * 4*10**9 }}'", "the operator '**'"),
    ("'{{ \"x\" * 4000000000 }}'", "longer than 65,536 characters"),
    ("{%for(i)in(range(10))%}x{%endfor%}", "loops"),
    ("{{model_path.__class__}}", "Getattr"),
    ("{{model_path|center(999999999)}}", "the filter 'center'"),
    ("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", "nested more than 24 deep"),
])
def test_templates_are_bounded(text, message):
    with pytest.raises(InputError) as err:
        render(Template(text, Marks("spec.yaml", values={("run_command",): (4, 3)}), ("run_command",)), VARS)
    (problem,) = err.value.problems
    assert (problem.file, problem.line) == ("spec.yaml", 4) and message in problem.message, problem


# ----------------------------------------------------------------------------- the lock

def _lock(tmp_path: Path, body: str, stack: str = "t") -> Path:
    path = tmp_path / "t.lock.yaml"
    path.write_text(f"version: 1\nstack: {stack}\nreplicas:\n{body}")
    return path


def test_lock_with_a_gpu_twice_is_refused(tmp_path):
    path = _lock(tmp_path, '  "a/0": {"host": "h", "vendor": "nvidia", "gpus": [0, 0], "port": 40000, '
                           '"claim": {"framework": "cuda", "gpus": 2, "vram_mib": "whole"}}\n')
    with pytest.raises(InputError, match="names a device twice") as err:
        read_lock(path, "t.lock.yaml", "t")
    assert err.value.problems[0].line == 4


def test_lock_of_another_stack_is_refused(tmp_path):
    path = _lock(tmp_path, "  {}\n".replace("  {}\n", ""), stack="prod")
    path.write_text("version: 1\nstack: prod\nreplicas: {}\n")
    with pytest.raises(InputError, match="written for stack 'prod', not 'demo'"):
        read_lock(path, "x.lock.yaml", "demo")


def test_lock_key_without_replica_number_is_a_problem(tmp_path, cli):
    path = _lock(tmp_path, '  "a": {"host": "h", "port": 40000, "claim": {"framework": "cpu", "gpus": 0, '
                           '"vram_mib": "whole"}}\n')
    with pytest.raises(InputError, match="is not a replica key; write DEPLOYMENT/N"):
        read_lock(path, "t.lock.yaml", "t")


def test_impossible_lock_entries_move_and_say_why():
    fleet = make_fleet(host("h1", gpus("nvidia", "A100", 80, 2)))
    claim = Claim("cuda", 1, None)
    demands = [Demand("a", 0, "cuda", 1), Demand("b", 0, "cuda", 1), Demand("c", 0, "cuda", 1)]
    prior = {  # a and b on the same whole GPU; c on a GPU the host does not have
        "a/0": LockedReplica("a/0", "h1", "nvidia", (0,), (None,), 40000, claim),
        "b/0": LockedReplica("b/0", "h1", "nvidia", (0,), (None,), 40001, claim),
        "c/0": LockedReplica("c/0", "h1", "nvidia", (7,), (None,), 40002, claim),
    }
    placement = place(fleet, demands, prior)
    by = placement.by_key()
    assert by["a/0"].status == "kept"
    assert (by["b/0"].status, by["b/0"].reason) == ("moved", "devices_taken")
    assert placement.moved_reasons["c/0"] == "devices_gone" and "c/0" not in by  # no third GPU
    assert len({g for a in placement.assignments for g in a.gpus}) == len(placement.assignments)


def test_problem_is_always_one_line():
    p = Problem("f\n.yaml", 1, 2, "a\tb", "x\ny\rz\x00\x1b[2J\u202e")
    assert "\n" not in str(p) and str(p).isprintable()


def test_a_quoted_merge_key_is_a_name():
    assert parse_yaml("'<<': 1\n", "t.yaml")[0] == {"<<": 1}
    with pytest.raises(InputError, match="a merge key"):
        parse_yaml("<<: 5\n", "t.yaml")
