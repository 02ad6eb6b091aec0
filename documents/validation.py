"""Validate parsed YAML against a pydantic model and turn every error into a file:line Problem.

Shared by backend specs, inventories and stack files, so all three speak the same way:
unknown keys point at the key and suggest the closest field, missing keys point at the
mapping that lacks them, wrong values point at the value.
"""
from __future__ import annotations

import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .problems import InputError, Problem, did_you_mean
from .yaml_reader import Marks, dotted

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, marks: Marks, base: tuple = (), context: dict | None = None) -> M:
    """``model.model_validate(data)`` with errors mapped to positions under ``base`` in ``marks``."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        raise InputError(problems_from(err, model, marks, base)) from None


def problems_from(err: ValidationError, model: type[BaseModel], marks: Marks, base: tuple) -> list[Problem]:
    problems = []
    for e in err.errors(include_url=False):
        loc = base + tuple(p for p in e["loc"] if p != "__root__")
        kind = e["type"]
        if kind == "extra_forbidden":
            key = loc[-1]
            hint = did_you_mean(str(key), _fields_at(model, e["loc"][:-1]))
            problems.append(marks.problem(loc, f"unknown key '{key}'{hint}; remove it or fix its spelling",
                                          at_key=True))
        elif kind == "missing":
            line, col = marks.of_value(loc[:-1])
            problems.append(Problem(marks.file, line, col, dotted(loc), f"required key '{loc[-1]}' is missing"))
        else:
            problems.append(marks.problem(loc, _message(e)))
    return problems


def _message(e: dict) -> str:
    msg = e["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if e["type"] == "literal_error":
        expected = e.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",")]
        got = e.get("input")
        hint = did_you_mean(str(got), choices) if isinstance(got, str) else ""
        msg = f"'{got}' is not one of: {', '.join(choices)}{hint}"
    elif e["type"] in ("string_type", "int_type", "bool_type", "dict_type", "list_type", "model_type",
                       "int_parsing", "bool_parsing", "float_type", "mapping_type"):
        got = e.get("input")
        msg = f"{msg[0].lower()}{msg[1:]}, got {_describe(got)}"
        if e["type"] == "string_type" and isinstance(got, (bool, int, float)):
            msg += f"; quote it: '{_yaml_text(got)}'"
    return msg


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {_yaml_text(value)}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text '{value[:40]}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _yaml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """The field names a model expects at ``loc`` (walks models, dicts, lists, optionals)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                field = next((f for f in tp.model_fields.values() if f.alias == part), None)
            if field is None:
                return []
            tp = field.annotation
        else:
            args = typing.get_args(tp)
            origin = typing.get_origin(tp)
            if origin in (dict, typing.Mapping) or (origin and issubclass(origin, dict)):
                tp = args[1] if len(args) == 2 else Any
            elif origin in (list, tuple, typing.Sequence):
                tp = args[0] if args else Any
            else:
                return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    """Optional[X] / Annotated[X, ...] / X | None -> X (the first model-like member)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = (models or members or [Any])[0]
            continue
        return tp
