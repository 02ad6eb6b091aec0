"""Read YAML into plain data while remembering where every key and value came from.

PyYAML's ``safe_load`` forgets positions and silently keeps the last of two duplicate keys.
Here we compose the node graph (with libyaml when present: fast, same marks), build plain
dicts/lists/scalars ourselves, refuse duplicate keys, and record the line and column of
each key and value under its path, e.g. ``("hosts", 3, "address")``.  Mapping keys are kept
as the text written (``1.9:`` stays ``"1.9"``), because every key in our formats is a name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .problems import InputError, Problem

try:  # libyaml composes ~10x faster and gives the same marks
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pure-python fallback
    _Loader = yaml.SafeLoader

Path_t = tuple  # a path into the document: str keys and int list indices


@dataclass
class Marks:
    """Positions (1-based line, column) of keys and values in one file."""

    file: str
    keys: dict[Path_t, tuple[int, int]] = field(default_factory=dict)
    values: dict[Path_t, tuple[int, int]] = field(default_factory=dict)

    def of_value(self, path: Path_t) -> tuple[int, int]:
        """Where the value at ``path`` is written, or the nearest enclosing thing that is."""
        path = tuple(path)
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def of_key(self, path: Path_t) -> tuple[int, int]:
        path = tuple(path)
        return self.keys.get(path) or self.of_value(path)

    def problem(self, path: Path_t, message: str, *, at_key: bool = False) -> Problem:
        line, col = self.of_key(path) if at_key else self.of_value(path)
        return Problem(self.file, line, col, dotted(path), message)


def dotted(path: Path_t) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pos(mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str):
        self.marks = Marks(file)
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")  # only its scalar constructors are used

    def build(self, node, path: Path_t) -> Any:
        self.marks.values[path] = _pos(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            self._constructor.flatten_mapping(node)  # resolves YAML merge keys (<<)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    line, col = _pos(key_node.start_mark)
                    self.problems.append(Problem(self.marks.file, line, col, dotted(path),
                                                 "a key must be a plain name, not a list or mapping"))
                    continue
                key = key_node.value
                if key in out:
                    line, col = _pos(key_node.start_mark)
                    first = self.marks.keys[path + (key,)][0]
                    self.problems.append(Problem(self.marks.file, line, col, dotted(path + (key,)),
                                                 f"duplicate key '{key}' (first written on line {first}); "
                                                 "keep one"))
                    continue
                self.marks.keys[path + (key,)] = _pos(key_node.start_mark)
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._constructor.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> tuple[Any, Marks]:
    """Parse one YAML document. Raises InputError with the parser's position on bad YAML."""
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = _pos(mark) if mark else (0, 0)
        what = err.problem or "invalid YAML"
        if err.context:
            what = f"{err.context}, {what}"
        raise InputError([Problem(file, line, col, "", f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as err:  # e.g. a second document, bad characters
        raise InputError([Problem(file, 0, 0, "", f"invalid YAML: {err}")]) from None
    if node is None:
        return None, Marks(file)
    builder = _Builder(file)
    try:
        data = builder.build(node, ())
    except yaml.constructor.ConstructorError as err:
        line, col = _pos(err.problem_mark) if err.problem_mark else (0, 0)
        raise InputError([Problem(file, line, col, "", f"invalid YAML: {err.problem}")]) from None
    if builder.problems:
        raise InputError(builder.problems)
    return data, builder.marks


def read_yaml(path: Path, display: str | None = None) -> tuple[Any, Marks]:
    """Read and parse a file; unreadable files and non-UTF-8 bytes are problems, not tracebacks."""
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError([Problem(name, 0, 0, "", "file not found")]) from None
    except OSError as err:
        raise InputError([Problem(name, 0, 0, "", f"cannot read file: {err.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError([Problem(name, line, 1, "", "file is not UTF-8 text; save it as UTF-8")]) from None
    return parse_yaml(text, name)
