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
            valid = _fields_at(model, e["loc"][:-1])
            hint = did_you_mean(str(key), valid)
            listing = f"; valid keys: {', '.join(valid)}" if valid else ""
            problems.append(marks.problem(loc, f"unknown key '{key}'{hint}{listing}", at_key=True))
        elif kind == "missing":
            line, col = marks.of_value(loc[:-1])
            problems.append(Problem(marks.file, line, col, dotted(loc), f"required key '{loc[-1]}' is missing"))
        else:
            problems.append(marks.problem(loc, message_for(e, _type_at(model, e["loc"]))))
    return problems


#: pydantic's error types -> how to say it to a person ({got} is the value as written)
_PLAIN = {
    "string_type": "must be text, got {got}",
    "int_type": "must be a whole number, got {got}",
    "int_parsing": "must be a whole number, got {got}",
    "int_from_float": "must be a whole number, got {got}",
    "float_type": "must be a number, got {got}",
    "float_parsing": "must be a number, got {got}",
    "finite_number": "must be a finite number, got {got}",
    "bool_type": "must be true or false, got {got}",
    "bool_parsing": "must be true or false, got {got}",
    "dict_type": "must be a mapping (key: value lines), got {got}",
    "mapping_type": "must be a mapping (key: value lines), got {got}",
    "model_type": "must be a mapping (key: value lines), got {got}",
    "model_attributes_type": "must be a mapping (key: value lines), got {got}",
    "list_type": "must be a list, got {got}",
    "tuple_type": "must be a list, got {got}",
    "greater_than": "must be more than {gt}, got {got}",
    "greater_than_equal": "must be {ge} or more, got {got}",
    "less_than": "must be less than {lt}, got {got}",
    "less_than_equal": "must be {le} or less, got {got}",
    "string_too_short": "must not be empty",
    "string_too_long": "is too long (at most {max_length} characters)",
    "too_short": "must have at least {min_length} entries",
    "too_long": "must have at most {max_length} entries",
    "none_required": "must be empty",
}


def message_for(e: dict, expected: Any = None) -> str:
    """One error in our words; no pydantic wording reaches the user."""
    kind, ctx, got = e["type"], e.get("ctx") or {}, e.get("input")
    if kind in ("value_error", "assertion_error"):
        msg = e["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        return msg
    if kind == "literal_error":
        choices = [c.strip().strip("'") for c in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]
        hint = did_you_mean(str(got), choices) if isinstance(got, str) else ""
        shown = f"'{got}'" if isinstance(got, str) else _describe(got)
        return f"{shown} is not one of: {', '.join(choices)}{hint}"
    template = _PLAIN.get(kind)
    if template is None:
        return f"{_describe(got)} is not accepted here"
    text = template.format(got=_describe(got), **{k: v for k, v in ctx.items() if isinstance(v, (int, float, str))})
    if kind in ("dict_type", "model_type", "mapping_type", "model_attributes_type"):
        hint = getattr(_unwrap(expected), "shape_hint", None)
        if hint:
            text += f"; {hint}"
    if kind == "string_type" and isinstance(got, (bool, int, float)):
        text += f"; quote it: '{_yaml_text(got)}'"
    return text


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {_yaml_text(value)}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text '{value[:40]}'" + ("…" if len(value) > 40 else "")
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
    """The field names a model expects at ``loc``."""
    tp = _unwrap(_type_at(model, loc))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


def _type_at(model: Any, loc: tuple) -> Any:
    """The declared type at ``loc`` (walks models, dicts, lists, optionals); Any when lost."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                field = next((f for f in tp.model_fields.values() if f.alias == part), None)
            if field is None:
                return Any
            tp = field.annotation
        else:
            args = typing.get_args(tp)
            origin = typing.get_origin(tp)
            if origin in (dict, typing.Mapping) or (isinstance(origin, type) and issubclass(origin, dict)):
                tp = args[1] if len(args) == 2 else Any
            elif origin in (list, tuple, typing.Sequence):
                tp = args[0] if args else Any
            else:
                return Any
    return tp


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
