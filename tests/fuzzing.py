"""Structured mutations of every shipped file kind, for the fuzz suite (tests/test_fuzz_suite.py).

A mutation starts from a real file (a backend spec, the demo inventory, the demo stack, the demo
lock), changes its parsed tree (delete or rename a key, change a value's type, huge or negative
numbers, control characters, deep nesting) or its text (tags, aliases, truncation, binary
garbage, a tab, a stray quote), and gives back the text to load.  Everything is driven by one
integer seed, so a failure is reproduced from its seed alone.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

SEED_FILES = {
    "backend": sorted((ROOT / "backends").glob("*/spec.yaml")),
    "inventory": [ROOT / "inventory" / "demo.yaml"],
    "stack": [ROOT / "stack" / "demo.yaml"],
    "lock": [ROOT / "stack" / "demo.lock.yaml"],
}
KINDS = tuple(SEED_FILES)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_WEIRD_STRINGS = ["", " ", "\x00", "\x1b[31mred", "a\nb", "a\rb", "\u202e", "\t", "'", '"', "{{", "{{x}}", "}}",
                  "{% for x in y %}", "$(reboot)", "; rm -rf /", "../../etc/passwd", "/var/run/docker.sock", "~",
                  "secret:", "secret:x y", "x" * 5000, "é中文", "--x=1", "-", "/", "whole", "80GB", "-1GiB",
                  "1e400", "0x10", "null", "yes", "no", "2024-01-01", "cuda", "vLLM", "\ufeff", "\\"]
_WEIRD_NUMBERS = [0, -1, 1, 2 ** 31, 2 ** 63, -(2 ** 63), 10 ** 30, 65536, 1023, 1024, 99999999999, 0.5, -0.0,
                  1e308]
_KEY_TYPOS = ["hf", "lables", "backend_nam", "vram_", "GPUS", "replica", "image_name ", "<<", "", "0"]


@dataclass(frozen=True)
class Case:
    kind: str
    seed: int
    operation: str
    text: str


def _seed_text(kind: str, rnd: random.Random) -> str:
    return rnd.choice(SEED_FILES[kind]).read_text()


def _paths(node, prefix=()):
    yield prefix, node
    if isinstance(node, dict):
        for k, v in list(node.items()):
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _parent(tree, path):
    node = tree
    for part in path[:-1]:
        node = node[part]
    return node


def _weird_value(rnd: random.Random):
    pick = rnd.randrange(6)
    if pick == 0:
        return rnd.choice(_WEIRD_STRINGS)
    if pick == 1:
        return rnd.choice(_WEIRD_NUMBERS)
    if pick == 2:
        return rnd.choice([None, True, False, [], {}, [1, "a"], {"k": "v"}])
    if pick == 3:
        return "x" + "".join(chr(rnd.randrange(0, 0x250)) for _ in range(rnd.randrange(1, 12)))
    if pick == 4:
        return rnd.choice(["80GiB", "1TiB", "4096", "40000-40063", "127.0.0.1", "::1", "nvidia", "amd", "binpack"])
    return {"huggingface": rnd.choice(["a/b", "a b", "\x00"])}


def _tree_mutation(tree, rnd: random.Random) -> str:
    paths = [p for p, _ in _paths(tree) if p]
    if not paths:
        return "empty"
    path = rnd.choice(paths)
    parent = _parent(tree, path)
    key = path[-1]
    op = rnd.randrange(7)
    if op == 0:
        del parent[key]
        return "delete"
    if op == 1 and isinstance(parent, dict):
        parent[rnd.choice(_KEY_TYPOS) + (str(key) if rnd.random() < 0.3 else "")] = parent.pop(key)
        return "rename"
    if op == 2:
        parent[key] = _weird_value(rnd)
        return "retype"
    if op == 3:
        deep = _weird_value(rnd)
        for _ in range(rnd.choice([3, 30, 70, 200])):
            deep = [deep] if rnd.random() < 0.5 else {"k": deep}
        parent[key] = deep
        return "nest"
    if op == 4:
        parent[key] = rnd.choice(_WEIRD_NUMBERS) * rnd.choice([1, -1])
        return "number"
    if op == 5 and isinstance(parent[key], str):
        s = parent[key]
        cut = rnd.randrange(len(s) + 1)
        parent[key] = s[:cut] + chr(rnd.choice([0, 7, 8, 11, 12, 27, 127, 0x85, 0x2028, 0x202E])) + s[cut:]
        return "control"
    parent[key] = [parent[key]] * rnd.randrange(0, 4)
    return "wrap"


def _text_mutation(text: str, rnd: random.Random) -> tuple[str, str]:
    lines = text.splitlines(keepends=True) or ["\n"]
    i = rnd.randrange(len(lines))
    op = rnd.randrange(9)
    if op == 0:
        return text[: rnd.randrange(len(text) + 1)], "truncate"
    if op == 1:
        cut = rnd.randrange(len(text) + 1)
        return text[:cut] + "".join(chr(rnd.randrange(256)) for _ in range(rnd.randrange(1, 40))) + text[cut:], \
            "garbage"
    if op == 2:
        tag = rnd.choice(["!!int ", "!!bool ", "!!float ", "!!binary ", "!!python/object:os.system ", "!x ",
                          "!!str ", "!!timestamp ", "!!set ", "!!omap "])
        lines[i] = lines[i].replace(": ", ": " + tag, 1)
        return "".join(lines), "tag"
    if op == 3:
        levels = rnd.randrange(2, 12)
        bomb = ["b0: &b0 [x, x, x, x, x, x, x, x, x]\n"]
        bomb += [f"b{n}: &b{n} [" + ", ".join([f"*b{n - 1}"] * 9) + "]\n" for n in range(1, levels)]
        return text + "".join(bomb), "alias bomb"
    if op == 4:
        return text + "self: &s [*s]\n" if rnd.random() < 0.5 else "a: &a\n  b: *a\n" + text, "self alias"
    if op == 5:
        lines[i] = "\t" + lines[i]
        return "".join(lines), "tab"
    if op == 6:
        cut = rnd.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:cut] + rnd.choice(["{", "[", "'", '"', "&a ", "*a ", "- ", ": ", "? ", "%", "@",
                                                "`", "---\n"]) + lines[i][cut:]
        return "".join(lines), "syntax"
    if op == 7:
        depth = rnd.choice([100, 1000, 20000])
        return text + "deep: " + "[" * depth + "]" * depth + "\n", "deep text"
    lines.insert(i, lines[rnd.randrange(len(lines))])
    return "".join(lines), "duplicate line"


def make_case(kind: str, seed: int) -> Case:
    rnd = random.Random(seed)
    text = _seed_text(kind, rnd)
    if rnd.random() < 0.55:
        tree = yaml.load(text, Loader=_LOADER)
        ops = [_tree_mutation(tree, rnd) for _ in range(rnd.randrange(1, 4))]
        try:
            dumped = yaml.dump(tree, Dumper=_DUMPER, allow_unicode=rnd.random() < 0.5, sort_keys=False,
                               width=10 ** 6)
            return Case(kind, seed, "+".join(ops), dumped)
        except RecursionError:  # PyYAML's writer recurses; deep nesting is also made as text below
            pass
    text, op = _text_mutation(text, rnd)
    return Case(kind, seed, op, text)
