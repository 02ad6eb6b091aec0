"""The jinja2 sandbox command templates are parsed and rendered in: only substitutions, literals, conditions
and a few text filters, every operator that can grow a value checked.

Loaded by ``backends.render`` the first time a token needs it.
"""
from __future__ import annotations

import functools

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["MAX_ARGUMENT", "Refused", "SecurityError", "TemplateError", "TemplateSyntaxError", "compile_token"]

#: the longest argument a template may render to
MAX_ARGUMENT = 64 * 1024

#: what a template may contain: substitutions, literals, conditions and a few text filters.
#: No loops, calls, assignments, macros or includes, so rendering takes time linear in the
#: template; sizes are checked on every operator that can grow a value.
_ALLOWED_NODES = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Const, nodes.Filter,
                  nodes.Test, nodes.CondExpr, nodes.If, nodes.Compare, nodes.Operand, nodes.And, nodes.Or,
                  nodes.Not, nodes.Concat, nodes.Add, nodes.Sub, nodes.Mul, nodes.Neg, nodes.Pos, nodes.Getitem,
                  nodes.Slice, nodes.List, nodes.Tuple, nodes.Keyword)
_ALLOWED_FILTERS = frozenset({"default", "d", "lower", "upper", "trim", "string", "int", "first", "last", "length"})


class _BoundedEnvironment(SandboxedEnvironment):
    """jinja2's sandbox with every operator that can grow a value checked, and no constant folding."""

    intercepted_binops = frozenset({"*", "+", "%", "**", "//", "/"})

    def call_binop(self, context, operator, left, right):
        if operator in ("**", "%", "//", "/"):
            raise jinja2.exceptions.SecurityError(f"the operator '{operator}' is not allowed in command templates")
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > 128:
                    raise jinja2.exceptions.SecurityError("a number in the template is too large")
            else:
                count = right if isinstance(right, int) else left if isinstance(left, int) else 1
                size = len(left) if hasattr(left, "__len__") else len(right) if hasattr(right, "__len__") else 0
                if count * size > MAX_ARGUMENT:
                    raise jinja2.exceptions.SecurityError(f"the template builds a value longer than "
                                                          f"{MAX_ARGUMENT:,} characters")
        if operator == "+" and hasattr(left, "__len__") and hasattr(right, "__len__"):
            if len(left) + len(right) > MAX_ARGUMENT:
                raise jinja2.exceptions.SecurityError(f"the template builds a value longer than {MAX_ARGUMENT:,} "
                                                      "characters")
        return super().call_binop(context, operator, left, right)


_ENV = _BoundedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, optimized=False)


def refused_construct(tree: nodes.Node) -> str | None:
    """The first construct a command template may not use, in words; None when all is allowed."""
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            return {"For": "loops ({% for %})", "Call": "function and method calls", "Assign": "assignments "
                    "({% set %})", "Macro": "macros", "Pow": "the operator '**'"}.get(
                type(node).__name__, f"'{type(node).__name__}' constructs")
        if isinstance(node, nodes.Filter) and node.name not in _ALLOWED_FILTERS:
            return f"the filter '{node.name}' (allowed: {', '.join(sorted(_ALLOWED_FILTERS))})"
    return None


class Refused(Exception):
    """A template uses something command templates may not (said in the message)."""


def _nesting(token: str) -> int:
    depth = deepest = 0
    for ch in token:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


@functools.lru_cache(maxsize=4096)
def compile_token(token: str) -> tuple[jinja2.Template, frozenset[str]]:
    if _nesting(token) > 24:  # jinja2's parser recurses on brackets
        raise Refused("brackets nested more than 24 deep")
    tree = _ENV.parse(token)
    refused = refused_construct(tree)
    if refused:
        raise Refused(refused)
    return _ENV.from_string(tree), frozenset(meta.find_undeclared_variables(tree))
