"""Backend parameters as GPUStack passes them: tokenised, merged per flag, formatted per flag.

``backend_parameters`` is a concatenated argv. Each entry is one token (``--host``, a JSON blob,
a path with spaces) or a whole ``--key value`` / pasted command line, told apart by its first
word; JSON after ``=`` keeps its quotes and spaces. This is GPUStack's ``flatten_to_argv`` with
``safe_split`` (gpustack/utils/command.py) and its ``_normalize_param_format``
(gpustack/worker/backends/base.py), ported rule for rule; tests/data/gpustack/parameters.json
holds what GPUStack's own functions return for the same inputs.

gpufleet adds one thing GPUStack's forms do by hand: a deployment's flag replaces the backend
default of the same flag, and ``drop_default_parameters`` removes defaults.
"""
from __future__ import annotations

import re
import shlex
from typing import Iterable, Sequence


class ParameterError(ValueError):
    """An entry that cannot be split (unbalanced quotes)."""


def is_parameter_key(token: str) -> bool:
    """``--foo``/``-n`` are keys; ``-1``, ``-0.5`` and the ``--`` marker are not (GPUStack's is_parameter_key)."""
    if not token.startswith("-") or len(token) <= 1 or token == "--":
        return False
    try:
        float(token)
        return False
    except ValueError:
        return True


def _mask_json_segments(text: str) -> tuple[str, dict[str, str]]:
    """``=`` followed by ``{`` or ``[``: the JSON up to its matching bracket becomes a placeholder."""
    result, mapping = [], {}
    i, n, json_id = 0, len(text), 0
    while i < n:
        if text[i] == "=" and i + 1 < n and text[i + 1] in "{[":
            start = j = i + 1
            depth, in_string, escape = 0, False, False
            while j < n:
                c = text[j]
                if escape:
                    escape = False
                elif c == "\\":
                    escape = True
                elif c == '"':
                    in_string = not in_string
                elif not in_string:
                    if c in "{[":
                        depth += 1
                    elif c in "}]":
                        depth -= 1
                        if depth == 0:
                            j += 1
                            break
                j += 1
            placeholder = f"\x1fJSON_{json_id}\x1f"
            json_id += 1
            mapping[placeholder] = text[start:j]
            result.append("=" + placeholder)
            i = j
            continue
        result.append(text[i])
        i += 1
    return "".join(result), mapping


def _normalize_continuations(text: str) -> str:
    """Pasted multi-line snippets: ``\\`` + newline joins lines; one stray trailing ``\\`` is dropped."""
    text = re.sub(r"\\\r?\n", " ", text)
    stripped = text.rstrip()
    if (len(stripped) - len(stripped.rstrip("\\"))) % 2 == 1:
        text = stripped[:-1]
    return text


def safe_split(expr: str) -> list[str]:
    masked, mapping = _mask_json_segments(expr)
    try:
        tokens = shlex.split(_normalize_continuations(masked))
    except ValueError as err:
        raise ParameterError(f"cannot split '{expr}': {err} (check the quotes)") from None
    out = []
    for token in tokens:
        for placeholder, json_text in mapping.items():
            token = token.replace(placeholder, json_text)
        out.append(token)
    return out


def flatten_to_argv(parameters: Iterable[str | None]) -> list[str]:
    """Entries whose first word is a key are re-split; any other entry is one token, verbatim."""
    tokens: list[str] = []
    for entry in parameters or ():
        if entry is None:
            continue
        stripped = entry.strip()
        if not stripped:
            continue
        if is_parameter_key(stripped.split(None, 1)[0]):
            tokens.extend(safe_split(stripped))
        else:
            tokens.append(stripped)
    return tokens


def _spans(tokens: Sequence[str]) -> list[tuple[str | None, int, int]]:
    """(key, start, end) per cluster: ``--key v1 v2``, ``--key=v``, a bare flag; a stray value has key None."""
    out: list[tuple[str | None, int, int]] = []
    i, n = 0, len(tokens)
    while i < n:
        tok, start = tokens[i], i
        i += 1
        if not is_parameter_key(tok):
            out.append((None, start, i))
        elif "=" in tok:
            out.append((tok.partition("=")[0], start, i))
        else:
            while i < n and not is_parameter_key(tokens[i]):
                i += 1
            out.append((tok, start, i))
    return out


def clusters(tokens: Sequence[str]) -> list[tuple[str | None, list[str]]]:
    """``--key v1 v2`` / ``--key=v`` / a bare flag -> (key, values); a stray value -> (None, [value])."""
    out = []
    for key, start, end in _spans(tokens):
        head = tokens[start]
        if key is None:
            out.append((None, [head]))
        elif "=" in head:
            out.append((key, [head.partition("=")[2]]))
        else:
            out.append((key, list(tokens[start + 1:end])))
    return out


def normalize_param_format(tokens: Sequence[str], target: str | None) -> list[str]:
    """Each ``--key value`` cluster in ``target`` form (``space``/``equal``); multi-value clusters stay spaced."""
    if target is None:
        return list(tokens)
    result: list[str] = []
    for key, values in clusters(tokens):
        if key is None:
            result.extend(values)
        elif not values:
            result.append(key)
        elif len(values) == 1 and target == "equal":
            result.append(f"{key}={values[0]}")
        else:
            result.append(key)
            result.extend(values)
    return result


def merge(defaults: Sequence[str], overrides: Sequence[str], drop: Iterable[str] = ()) -> list[str]:
    """Default tokens, less the flags the deployment sets or drops, then the deployment's tokens."""
    replaced = flags(overrides) | set(drop)
    kept: list[str] = []
    for key, start, end in _spans(defaults):
        if key is None or key not in replaced:
            kept.extend(defaults[start:end])
    return kept + list(overrides)


def flags(tokens: Sequence[str]) -> set[str]:
    return {key for key, _ in clusters(tokens) if key is not None}


_FALSY = frozenset({"0", "false", "no", "off", "f", "n"})


def _pairs(tokens: Sequence[str]):
    """(key without dashes, first value or None), as GPUStack's _iter_param_pairs yields them."""
    for key, values in clusters(tokens):
        if key is not None:
            yield key.lstrip("-"), (values[0] if values else None)


def find_parameter(tokens: Sequence[str], *names: str) -> str | None:
    """GPUStack's find_parameter: the first value of any of ``names`` (without dashes); a bare flag has none."""
    return next((v for k, v in _pairs(tokens) if k in names and v is not None), None)


def find_bool_parameter(tokens: Sequence[str], *names: str) -> bool:
    """GPUStack's find_bool_parameter: a bare flag or a truthy value; the first occurrence wins."""
    for key, value in _pairs(tokens):
        if key in names:
            return value is None or value.lower() not in _FALSY
    return False
