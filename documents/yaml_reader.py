"""Read YAML into plain data, bounded, while remembering where every key and value came from.

Files arrive through pull requests, so they are untrusted: this reader never recurses on the
input, never follows an alias into exponential work, and never blocks on a special file.

- The file is opened non-blocking and must be a regular file (a FIFO, a device or a folder is
  refused before a byte is read) of at most ``Limits.max_bytes``.
- Control characters other than tab, LF and CR are refused with their line and column.
- PyYAML's event stream (libyaml when present) is turned into dicts, lists and scalars by a
  loop with an explicit stack: nesting deeper than ``Limits.max_depth`` is refused at the
  opening bracket, and every alias adds the size of what it repeats to a running count, so an
  alias bomb is refused at the first alias that pushes it past ``Limits.max_values``.
- A plain document (no anchor, alias, tag, merge key or duplicate key: how our files are written) is read
  by a shorter loop that records no positions; they are found from the kept text the first time a problem
  or note asks for one. Anything else takes the loop above.
- Scalars follow YAML's safe core schema (null, bool, int, float, str). Other tags (``!!binary``,
  ``!!python/…``, ``!custom``) are refused; a tagged value that does not parse (``!!int abc``)
  is a problem; numbers beyond 64 bits, infinities and NaN are out of range. Dates stay text.
- Duplicate keys are refused (PyYAML silently keeps the last); mapping keys are kept as the text
  written (``1.9:`` stays ``"1.9"``), since every key in our formats is a name.

Positions are recorded under paths such as ``("hosts", 3, "address")``.
"""
from __future__ import annotations

import errno
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .problems import InputError, Problem

try:  # libyaml parses ~10x faster and gives the same marks
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pure-python fallback
    _Loader = yaml.SafeLoader

Path_t = tuple  # a path into the document: str keys and int list indices


@dataclass(frozen=True)
class Limits:
    """What one document may cost. Our formats need a small fraction of each."""

    max_bytes: int = 16 * 1024 * 1024
    max_depth: int = 64
    #: values after alias expansion (what validation will walk)
    max_values: int = 2_000_000


LIMITS = Limits()


class Marks:
    """Positions (1-based line, column) of keys and values in one file.

    A document read without anything unusual (see ``_plain_document``) keeps its text instead, and its
    positions are found the first time one is asked for, by reading the text again with the composer that
    records them: a file with no problem and no note never pays for them."""

    __slots__ = ("_keys", "_limits", "_text", "_values", "file")

    def __init__(self, file: str, keys: dict[Path_t, tuple[int, int]] | None = None,
                 values: dict[Path_t, tuple[int, int]] | None = None):
        self.file = file
        self._keys = {} if keys is None else keys
        self._values = {} if values is None else values
        self._text: str | None = None
        self._limits = LIMITS

    @classmethod
    def later(cls, file: str, text: str, limits: Limits) -> Marks:
        """The marks of ``text``, found when first needed. ``text`` has been read without a problem."""
        marks = cls(file)
        marks._text, marks._limits = text, limits
        return marks

    @property
    def keys(self) -> dict[Path_t, tuple[int, int]]:
        if self._text is not None:
            self._find()
        return self._keys

    @property
    def values(self) -> dict[Path_t, tuple[int, int]]:
        if self._text is not None:
            self._find()
        return self._values

    def _find(self) -> None:
        composer = _Composer(self.file, self._limits)
        loader = _Loader(self._text)
        try:
            composer.run(loader.get_event)
        finally:
            loader.dispose()
        self._keys, self._values, self._text = composer.marks._keys, composer.marks._values, None

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


# ----------------------------------------------------------------------------- reading the file

def read_yaml(path: Path, display: str | None = None, limits: Limits = LIMITS) -> tuple[Any, Marks]:
    """Read and parse one file. Anything wrong is an InputError naming the file, never an OSError."""
    name = display or str(path)
    return parse_yaml(read_text(path, name, limits.max_bytes), name, limits)


def read_text(path: Path, name: str, max_bytes: int = LIMITS.max_bytes) -> str:
    """A regular file's UTF-8 text, at most ``max_bytes``; special files are refused unread."""
    raw = read_bytes(path, name, max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise InputError([Problem(name, line, col, "", "the file is not UTF-8 text; save it as UTF-8")]) from None


def path_kind(path: Path) -> str:
    """``file``, ``folder``, ``missing`` or ``other`` (a special file, a loop, a path too long): never raises."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError):
        return "other"
    return "folder" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def read_bytes(path: Path, name: str, max_bytes: int = LIMITS.max_bytes) -> bytes:
    def fail(message: str) -> InputError:
        return InputError([Problem(name, 0, 0, "", message)])

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat below refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise fail(_os_message(err)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise fail("this is a folder, not a file; give the path of a YAML file")
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                    "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise fail(f"this is {kind}, not a regular file; give the path of a YAML file")
        if st.st_size > max_bytes:
            raise fail(f"the file is {st.st_size:,} bytes; the limit is {max_bytes:,}")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise fail(f"the file is more than {max_bytes:,} bytes, the limit")
        return b"".join(chunks)
    except OSError as err:
        raise fail(_os_message(err)) from None
    finally:
        os.close(fd)


def _os_message(err: OSError) -> str:
    return {
        errno.ENOENT: "file not found",
        errno.ENOTDIR: "file not found (a part of the path is not a folder)",
        errno.ELOOP: "the path is a loop of symbolic links; point it at a real file",
        errno.ENAMETOOLONG: "the path is too long for this system",
        errno.EACCES: "permission denied: this user cannot read the file",
        errno.EISDIR: "this is a folder, not a file; give the path of a YAML file",
    }.get(err.errno, f"cannot read the file: {err.strerror or err}")


# ----------------------------------------------------------------------------- parsing

# YAML allows tab, LF, CR and NEL; libyaml's own message for the rest carries no line
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff]")
#: the ASCII characters YAML allows: tab, LF, CR and the printable ones (``_control``)
_ALLOWED_ASCII = bytes([9, 10, 13, *range(32, 127)])


def _control(text: str) -> re.Match | None:
    """The first character these files may not hold (``_CONTROL``), or None. An ASCII text (nearly every file)
    is cleared by deleting the allowed bytes from it and finding nothing left: a quarter of the regular
    expression's time on a 673 KB stack file (the expression tests each character against its class)."""
    if text.isascii() and not text.encode("ascii").translate(None, _ALLOWED_ASCII):
        return None
    return _CONTROL.search(text)


def parse_yaml(text: str, file: str, limits: Limits = LIMITS) -> tuple[Any, Marks]:
    """Parse one YAML document into plain data and its marks. Raises InputError on anything wrong."""
    if text.startswith("\ufeff"):
        text = text[1:]
    bad = _control(text)
    if bad:
        line, col = _line_col(text, bad.start())
        raise InputError([Problem(file, line, col, "", f"control character U+{ord(bad.group()):04X} is not allowed "
                                                        "in these files; remove it")])
    data = _plain_document(text, limits)
    if data is not _UNUSUAL:
        return data, Marks.later(file, text, limits)
    composer = _Composer(file, limits)
    loader = _Loader(text)
    try:
        composer.run(loader.get_event)
    except yaml.MarkedYAMLError as err:
        if "maximum nesting depth" in (err.problem or ""):
            # the libyaml in newer PyYAML wheels (6.0.4 here) stops at 1,000 levels while scanning ahead,
            # before the composer sees the event past its own limit: the same refusal, said the same way
            mark = err.problem_mark
            raise InputError([Problem(file, mark.line + 1, mark.column + 1, "",
                                      f"nested more than {limits.max_depth} levels deep; these files need only "
                                      "a few levels")]) from None
        raise InputError([_syntax_problem(err, text, file)]) from None
    except yaml.YAMLError as err:  # a reader error: position, no line
        position = getattr(err, "position", None)
        line, col = _line_col(text, position) if isinstance(position, int) else (0, 0)
        raise InputError([Problem(file, line, col, "", "invalid YAML: a character that YAML does not allow")]) \
            from None
    finally:
        loader.dispose()
    if composer.problems:
        raise InputError(composer.problems)
    return composer.result, composer.marks


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


#: libyaml's wording -> what to tell a person
_SYNTAX = (
    ("found character that cannot start any token", "this character cannot start a value; put the value in quotes"),
    ("mapping values are not allowed here", "a ':' where a value was expected; quote a value that contains ': ', "
                                            "or fix the indentation"),
    ("mapping values are not allowed in this context", "a ':' where a value was expected; quote a value that "
                                                       "contains ': ', or fix the indentation"),
    ("could not find expected ':'", "expected 'key: value' here; a ':' is missing or the indentation is off"),
    ("did not find expected key", "this line does not line up with the keys above it; fix the indentation"),
    ("did not find expected '-' indicator", "this line does not line up with the list items above it; fix "
                                            "the indentation"),
    ("did not find expected ',' or ']'", "a list in [brackets] is not closed; add the ']' or a ','"),
    ("did not find expected ',' or '}'", "a mapping in {braces} is not closed; add the '}' or a ','"),
    ("found unexpected end of stream", "the file ends inside a value; close the open quote or bracket"),
    ("found unknown escape character", "unknown escape in a double-quoted string; write a backslash as \\\\ "
                                       "or use single quotes"),
    ("found undefined alias", "this alias (*name) refers to no anchor (&name) before it"),
    ("found duplicate anchor", "this anchor (&name) is defined twice; rename one"),
    ("but found another document", "a second YAML document ('---'); a file holds one document"),
    ("found a tab character that violates indentation", "a tab in the indentation; YAML indents with spaces only"),
    ("found a tab character where an indentation space is expected", "a tab in the indentation; YAML indents "
                                                                      "with spaces only"),
    ("found unexpected ':'", "an unexpected ':'; quote the value that contains it"),
    ("while scanning an alias", "an alias must be *name, letters and digits"),
    ("while scanning an anchor", "an anchor must be &name, letters and digits"),
    ("while scanning a quoted scalar", "a quoted value is not closed; add the closing quote"),
)


def _syntax_problem(err: yaml.MarkedYAMLError, text: str, file: str) -> Problem:
    mark = err.problem_mark or err.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    said = f"{err.context or ''} {err.problem or ''}"
    index = getattr(mark, "index", None)
    if isinstance(index, int) and 0 <= index < len(text) and text[index] == "\t":
        return Problem(file, line, col, "", "invalid YAML: a tab here; YAML indents and separates with spaces "
                                            "only, replace the tab with spaces")
    for needle, message in _SYNTAX:
        if needle in said:
            return Problem(file, line, col, "", f"invalid YAML: {message}")
    return Problem(file, line, col, "", f"invalid YAML: {(err.problem or err.context or 'cannot parse').strip()}")


# ----------------------------------------------------------------------------- events -> data

_CORE = "tag:yaml.org,2002:"
class _MergeKey(str):
    """YAML's merge key (a plain ``<<``), told apart from a quoted ``'<<'`` name by its type."""


_MERGE = _MergeKey("<<")
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}
#: tags a key, a mapping and a list may carry (all mean what no tag means)
_KEY_TAGS = (None, "!", _CORE + "str", _CORE + "merge")
_MAP_TAGS = (None, "!", _CORE + "map")
_SEQ_TAGS = (None, "!", _CORE + "seq")
_MAX_INT = 2 ** 63 - 1
_RESOLVER = yaml.resolver.Resolver()
#: untagged plain text -> its value (text, number, true/false or null: nothing a caller can change): values
#: repeat (sizes, names, true), and each is resolved and constructed once. (Untagged quoted text is text.)
_CONSTRUCTED: dict[str, Any] = {}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


#: what ``_plain_document`` says of a document it leaves to ``_Composer``
_UNUSUAL = object()


class _Unusual(Exception):
    pass


def _unusual(mark, message: str) -> _Unusual:
    return _Unusual()


def _plain_document(text: str, limits: Limits) -> Any:
    """The data of a plain document, or ``_UNUSUAL``: the fast path most files take.

    Plain means what our files are written with: untagged scalars that read as text, numbers, true/false or
    null, under unique plain keys, in lists and mappings, one document, within ``limits``. Any anchor, alias,
    tag, merge key, duplicate key, syntax error or value that cannot be read is unusual, and the whole text
    is read again by ``_Composer``, which finds the problem and says where (or reads the rare feature).
    Nothing is recorded but the data: positions are found later, if a problem or note needs one (``Marks``);
    this is about half the cost of ``_Composer`` on a 3,600-deployment stack. The data is the same as
    ``_Composer``'s (tests/test_yaml_reader.py reads every test file both ways)."""
    loader = _Loader(text)
    get_event, constructed = loader.get_event, _CONSTRUCTED
    scalar_event, map_start, seq_start = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
    collection_end = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    parents: list = []  # (container, key in it, is it a mapping) of each open collection, outermost first
    top: Any = None  # the innermost open collection
    in_map = False  # is ``top`` a mapping
    key: str | None = None  # the key read in ``top`` whose value comes next
    result: Any = None
    values = documents = 0
    max_depth = limits.max_depth
    try:
        event = get_event()
        while event is not None:
            kind = type(event)
            if kind is scalar_event:
                if event.tag is not None or event.anchor is not None:
                    return _UNUSUAL
                if in_map and key is None:
                    key = event.value
                    if key == "<<" or key in top:
                        return _UNUSUAL
                else:
                    if event.implicit[0]:
                        value = constructed.get(event.value, constructed)
                        if value is constructed:
                            value = _construct(event, _unusual)
                    else:
                        value = event.value  # quoted: text
                    values += 1
                    if in_map:
                        top[key] = value
                        key = None
                    elif top is None:
                        result = value
                    else:
                        top.append(value)
            elif kind is map_start or kind is seq_start:
                if event.tag is not None or event.anchor is not None or len(parents) >= max_depth:
                    return _UNUSUAL
                value = {} if kind is map_start else []
                values += 1
                if in_map:
                    if key is None:
                        return _UNUSUAL  # a collection as a key
                    top[key] = value
                elif top is None:
                    result = value
                else:
                    top.append(value)
                parents.append((top, key, in_map))
                top, key, in_map = value, None, kind is map_start
            elif kind in collection_end:
                top, key, in_map = parents.pop()
                key = None
            elif kind is yaml.AliasEvent:
                return _UNUSUAL
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    return _UNUSUAL
            event = get_event()
    except (yaml.YAMLError, _Unusual):
        return _UNUSUAL
    finally:
        loader.dispose()
    return result if values <= limits.max_values else _UNUSUAL


class _Frame:
    __slots__ = ("path", "value", "key", "key_mark", "key_path", "size", "anchor", "merges", "is_map", "event")

    def __init__(self, path: Path_t, value, anchor: str | None, event):
        self.path, self.value, self.anchor, self.event = path, value, anchor, event
        self.is_map = isinstance(value, dict)
        self.key: str | None = None
        self.key_mark: tuple[int, int] | None = None
        self.key_path: Path_t = ()  # path + (key,), made once by _key while key is set
        self.size = 1  # values in this subtree once aliases are expanded
        self.merges: list = []


class _Composer:
    """Builds plain data from parser events with an explicit stack: the input controls no recursion."""

    def __init__(self, file: str, limits: Limits):
        self.file, self.limits = file, limits
        self.marks = Marks(file)
        self.problems: list[Problem] = []
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.expanded = 0
        self.documents = 0
        self.result: Any = None
        self._handlers = {yaml.ScalarEvent: self._scalar, yaml.MappingStartEvent: self._open,
                          yaml.SequenceStartEvent: self._open, yaml.MappingEndEvent: self._end,
                          yaml.SequenceEndEvent: self._end, yaml.AliasEvent: self._alias,
                          yaml.DocumentStartEvent: self._document}

    def fail(self, mark, message: str) -> InputError:
        return InputError([Problem(self.file, mark.line + 1, mark.column + 1, dotted(self._here()), message)])

    def _here(self) -> Path_t:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if top.is_map:
            return top.key_path if top.key is not None else top.path
        return top.path + (len(top.value),)

    def run(self, get_event) -> None:
        """Every event of the parser until its stream ends (``get_event`` gives None), each to its handler by
        type: one dict lookup, not a chain of isinstance. Called straight, not through yaml.parse's generator:
        a 3,600-deployment stack has 100,000 events. The three cases that are most of a document are done
        here, without a call: a plain key, and a plain value already constructed once (``_CONSTRUCTED``)
        under a key or in a list. Each does exactly what ``_scalar`` (and ``_key``, ``_attach``) does for it;
        anything else goes there."""
        scalar_event, handlers, stack = yaml.ScalarEvent, self._handlers, self.stack
        values, keys, constructed = self.marks.values, self.marks.keys, _CONSTRUCTED
        max_values = self.limits.max_values
        event = get_event()
        while event is not None:
            if type(event) is scalar_event:
                if stack and event.tag is None and event.anchor is None:
                    top = stack[-1]
                    if top.is_map and top.key is None:  # a key (``_key``)
                        key = event.value
                        if key != "<<" and key not in top.value:
                            path = top.key_path = top.path + (key,)
                            mark = event.start_mark
                            keys[path] = top.key_mark = (mark.line + 1, mark.column + 1)
                            top.key = key
                            event = get_event()
                            continue
                    elif self.expanded < max_values:
                        got = constructed.get(event.value, constructed) if event.implicit[0] else event.value
                        if got is not constructed:
                            if not top.is_map:  # a list item (``_attach``)
                                mark = event.start_mark
                                values[top.path + (len(top.value),)] = (mark.line + 1, mark.column + 1)
                                self.expanded += 1
                                top.size += 1
                                top.value.append(got)
                                event = get_event()
                                continue
                            if top.key_mark is not None and type(top.key) is str:  # a value under its key
                                mark = event.start_mark
                                values[top.key_path] = (mark.line + 1, mark.column + 1)
                                self.expanded += 1
                                top.size += 1
                                top.value[top.key] = got
                                top.key = top.key_mark = None
                                event = get_event()
                                continue
                self._scalar(event)
            else:
                handler = handlers.get(type(event))
                if handler is not None:
                    handler(event)
            event = get_event()

    def _document(self, event) -> None:
        self.documents += 1
        if self.documents > 1:
            raise self.fail(event.start_mark, "a second YAML document ('---'); a file holds one document")

    # -- collections
    def _open(self, event) -> None:
        top = self.stack[-1] if self.stack else None
        if top is not None and top.is_map and top.key is None:
            raise self.fail(event.start_mark, "a key must be a plain name, not a list or mapping")
        if len(self.stack) >= self.limits.max_depth:
            raise self.fail(event.start_mark, f"nested more than {self.limits.max_depth} levels deep; these files "
                                              "need only a few levels")
        tag = event.tag
        is_map = isinstance(event, yaml.MappingStartEvent)
        if tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
            raise self.fail(event.start_mark, f"the tag {_show_tag(tag)} is not accepted; remove it")
        path = self._here()
        self.marks.values[path] = (event.start_mark.line + 1, event.start_mark.column + 1)
        if event.anchor:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Frame(path, {} if is_map else [], event.anchor, event))

    def _end(self, event) -> None:
        frame = self.stack.pop()
        if frame.merges:
            for merged in frame.merges:  # explicit keys win over merged ones, earlier merges over later
                for key, value in merged.items():
                    frame.value.setdefault(key, value)
        if frame.anchor:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = (frame.value, frame.size)
        self._attach(frame.value, frame.size, frame.event)

    # -- leaves
    def _alias(self, event) -> None:
        name = event.anchor
        if name in self.open_anchors:
            raise self.fail(event.start_mark, f"alias *{name} refers to the value that contains it; a value cannot "
                                              "contain itself")
        if name not in self.anchors:
            raise self.fail(event.start_mark, f"alias *{name} refers to no anchor &{name} before it")
        value, size = self.anchors[name]
        top = self.stack[-1] if self.stack else None
        if top is not None and top.is_map and top.key is None:
            if not isinstance(value, str):
                raise self.fail(event.start_mark, "a key must be a plain name, not a list, mapping or number")
            self._key(value, event)
            return
        self.marks.values[self._here()] = (event.start_mark.line + 1, event.start_mark.column + 1)
        self._attach(value, size, event)

    def _scalar(self, event) -> None:
        top = self.stack[-1] if self.stack else None
        if top is not None and top.is_map and top.key is None:
            if event.tag not in _KEY_TAGS:
                raise self.fail(event.start_mark, f"the tag {_show_tag(event.tag)} is not accepted on a key; "
                                                  "remove it")
            if event.value == "<<" and event.implicit[0]:  # a plain <<: YAML's merge key; a quoted '<<' is a name
                top.key, top.key_mark = _MERGE, (event.start_mark.line + 1, event.start_mark.column + 1)
                top.key_path = top.path + (_MERGE,)
                return
            self._key(event.value, event)
            return
        value = _construct(event, self.fail)
        mark = event.start_mark
        if event.anchor:
            self.anchors[event.anchor] = (value, 1)
        self.marks.values[self._here()] = (mark.line + 1, mark.column + 1)
        self._attach(value, 1, event)

    def _key(self, key: str, event) -> None:
        top = self.stack[-1]
        path = top.key_path = top.path + (key,)
        pos = (event.start_mark.line + 1, event.start_mark.column + 1)
        if key in top.value:
            first = self.marks.keys.get(path, pos)[0]
            self.problems.append(Problem(self.file, pos[0], pos[1], dotted(path),
                                         f"duplicate key '{key}' (first written on line {first}); keep one"))
            top.key, top.key_mark = key, None  # the value is read and dropped
            return
        self.marks.keys[path] = pos
        top.key, top.key_mark = key, pos

    def _attach(self, value, size: int, event) -> None:
        """Add a finished value to its parent; ``event`` is where it starts (for the alias-bomb message)."""
        self.expanded += size
        if self.expanded > self.limits.max_values:
            raise self.fail(event.start_mark, f"aliases expand this document beyond {self.limits.max_values:,} "
                                              "values (an alias bomb?); write the values out or use fewer aliases")
        if not self.stack:
            self.result = value
            return
        top = self.stack[-1]
        top.size += size
        if not top.is_map:
            top.value.append(value)
            return
        key, key_mark = top.key, top.key_mark
        top.key, top.key_mark = None, None
        if isinstance(key, _MergeKey):
            merged = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in merged):
                line, col = key_mark
                self.problems.append(Problem(self.file, line, col, dotted(top.path + ("<<",)),
                                             "a merge key (<<) takes a mapping or a list of mappings"))
                return
            top.merges.extend(merged)
            return
        if key_mark is None:  # a duplicate key: reported, value dropped
            return
        top.value[key] = value

def _construct(event, fail) -> Any:
    """The value of a scalar event; ``fail(mark, message)`` makes the exception for one that cannot be read."""
    tag, value = event.tag, event.value
    if tag is None:
        if not event.implicit[0]:  # quoted (or a block scalar): the resolver says text, always
            return value
        got = _CONSTRUCTED.get(value, _CONSTRUCTED)
        if got is not _CONSTRUCTED:
            return got
        tag = _RESOLVER.resolve(yaml.ScalarNode, value, event.implicit)
        got = _construct_tagged(event, tag, value, fail)  # raises for what cannot be read: not kept
        if len(_CONSTRUCTED) > 8192:
            _CONSTRUCTED.clear()
        _CONSTRUCTED[value] = got
        return got
    return _construct_tagged(event, tag, value, fail)


def _construct_tagged(event, tag: str, value: str, fail) -> Any:
    if tag == "!":
        tag = _CORE + "str"
    if tag == _CORE + "str":
        return value
    if tag == _CORE + "timestamp":
        return value  # dates stay text: every date-like value in our formats is a name
    if tag not in _SCALAR_TAGS:
        raise fail(event.start_mark, f"the tag {_show_tag(tag)} is not accepted; remove it (values are "
                   "plain text, numbers, true/false, lists and mappings)")
    kind = tag[len(_CORE):]
    if kind == "str":
        return value
    if kind == "null":
        return None
    if kind == "int" and value.isascii() and value.isdigit() and len(value) <= 18 and \
            (value[0] != "0" or len(value) == 1):
        return int(value)  # plain decimal, the common case (a leading 0 is YAML 1.1's octal): no node
    node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
    try:
        if kind == "bool":
            return _CONSTRUCTOR.construct_yaml_bool(node)
        if kind == "int":
            if len(value.replace("_", "")) > 24:
                raise fail(event.start_mark, f"the number {_short(value)} is out of range (at most "
                           f"{_MAX_INT:,})")
            number = _CONSTRUCTOR.construct_yaml_int(node)
            if abs(number) > _MAX_INT:
                raise fail(event.start_mark, f"the number {_short(value)} is out of range (at most "
                           f"{_MAX_INT:,})")
            return number
        number = _CONSTRUCTOR.construct_yaml_float(node)
    except (ValueError, KeyError, IndexError, TypeError, OverflowError):
        if event.tag is None:
            raise fail(event.start_mark, f"'{_short(value)}' cannot be read as a {kind}; put it in "
                       "quotes if it is text") from None
        what = {"bool": "true or false", "int": "a whole number", "float": "a number",
                "null": "null"}[kind]
        raise fail(event.start_mark, f"'{_short(value)}' is tagged !!{kind} but is not {what}; fix the "
                   "value or remove the tag") from None
    if not math.isfinite(number):
        raise fail(event.start_mark, f"'{_short(value)}' is not a finite number; write a plain number")
    return number


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _show_tag(tag: str | None) -> str:
    tag = tag or ""
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag
