"""The one error type for bad input: a list of problems, each pinned to file:line:col.

Every stage that reads user files raises :class:`InputError`; the CLI prints one line per
problem and exits 2, the Pulumi program fails the preview with the same lines.  Nothing
else is allowed to escape for bad input (the hypothesis tests hold us to that).
"""
from __future__ import annotations

import difflib
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one place in one file."""

    file: str
    line: int  # 1-based; 0 when the problem is about the file as a whole
    col: int  # 1-based; 0 when unknown
    field: str  # dotted path, e.g. "deployments.qwen3.backend"; "" for the whole file
    message: str

    def __str__(self) -> str:
        """One line, whatever the input held: control characters and newlines are shown escaped."""
        where = printable(self.file)
        if self.line:
            where += f":{self.line}:{self.col or 1}"
        message = printable(self.message)
        return f"{where}: {printable(self.field)}: {message}" if self.field else f"{where}: {message}"

    def sort_key(self) -> tuple:
        return (self.file, self.line, self.col, self.field, self.message)


class InputError(Exception):
    """Bad input: one or more problems, printed one per line."""

    def __init__(self, problems: Iterable[Problem]):
        unique = sorted(set(problems), key=Problem.sort_key)
        if not unique:
            raise ValueError("InputError needs at least one problem")
        self.problems: list[Problem] = unique
        super().__init__("\n".join(str(p) for p in unique))


class ProblemList:
    """Collects problems across a stage so the user sees all of them at once, not one per run."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, problem: Problem) -> None:
        self.items.append(problem)

    def extend(self, problems: Iterable[Problem]) -> None:
        self.items.extend(problems)

    def absorb(self, fn, *args, **kwargs):
        """Run ``fn``; keep its problems instead of raising. Returns its result or None."""
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            self.items.extend(err.problems)
            return None

    def raise_if_any(self) -> None:
        if self.items:
            raise InputError(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` safe for a terminal or a CI log: one line, no escape sequences, no bidi tricks.

    Control characters (C0, DEL, C1), format characters (bidi overrides, zero-width) and line or
    paragraph separators are written as ``\\n``, ``\\x1b``, ``\\u202e``; everything else is kept.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") or ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, matching case-insensitively too; else ''."""
    choices = [c for c in choices if isinstance(c, str)]
    if not choices:
        return ""
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return f" (did you mean '{lowered[word.lower()]}'?)"
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""
