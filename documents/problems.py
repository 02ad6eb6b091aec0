"""The one error type for bad input: a list of problems, each pinned to file:line:col.

Every stage that reads user files raises :class:`InputError`; the CLI prints one line per
problem and exits 2, the Pulumi program fails the preview with the same lines.  Nothing
else is allowed to escape for bad input (the hypothesis tests hold us to that).
"""
from __future__ import annotations

import difflib
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
        where = self.file
        if self.line:
            where += f":{self.line}:{self.col or 1}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

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
