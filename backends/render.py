"""Turn a backend spec + a deployment into exec-form argv: never a shell.

GPUStack substitutes ``{{model_path}} {{model_name}} {{port}} {{worker_ip}} {{gpu_count}}
{{gpu_ids}}`` and ``{{VAR}}`` (any environment variable in scope), then splits the string
POSIX-style.  We split first and render each argument on its own (jinja2 sandbox, strict
undefined), so a substituted value is always exactly one argument: a model named
``x; rm -rf /`` stays one argv element and no value can smuggle in extra flags.  For every
value without spaces or quotes this gives the same argv as substitute-then-split.
"""
from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from documents.problems import InputError, Problem, did_you_mean
from documents.yaml_reader import Marks

BUILTIN_VARIABLES = ("model_path", "model_name", "port", "worker_ip", "gpu_count", "gpu_ids")
SECRET_PREFIX = "secret:"

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


def _refused_construct(tree: nodes.Node) -> str | None:
    """The first construct a command template may not use, in words; None when all is allowed."""
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            return {"For": "loops ({% for %})", "Call": "function and method calls", "Assign": "assignments "
                    "({% set %})", "Macro": "macros", "Pow": "the operator '**'"}.get(
                type(node).__name__, f"'{type(node).__name__}' constructs")
        if isinstance(node, nodes.Filter) and node.name not in _ALLOWED_FILTERS:
            return f"the filter '{node.name}' (allowed: {', '.join(sorted(_ALLOWED_FILTERS))})"
    return None


@dataclass(frozen=True)
class Template:
    """A command-line template and where it was written (for errors)."""

    text: str
    marks: Marks
    path: tuple

    def problem(self, message: str) -> Problem:
        return self.marks.problem(self.path, message)


@dataclass(frozen=True)
class Variables:
    """What a template may refer to: the six built-ins and the environment in scope."""

    model_path: str
    model_name: str
    port: int
    worker_ip: str
    gpu_count: int
    gpu_ids: str
    env: Mapping[str, str]

    def as_dict(self) -> dict[str, object]:
        values: dict[str, object] = {k: v for k, v in self.env.items()}
        values.update(model_path=self.model_path, model_name=self.model_name, port=self.port,
                      worker_ip=self.worker_ip, gpu_count=self.gpu_count, gpu_ids=self.gpu_ids)
        return values


class _Refused(Exception):
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
def _compile(token: str) -> tuple[jinja2.Template, frozenset[str]]:
    if _nesting(token) > 24:  # jinja2's parser recurses on brackets
        raise _Refused("brackets nested more than 24 deep")
    tree = _ENV.parse(token)
    refused = _refused_construct(tree)
    if refused:
        raise _Refused(refused)
    return _ENV.from_string(tree), frozenset(meta.find_undeclared_variables(tree))


@functools.lru_cache(maxsize=4096)
def _split_text(text: str) -> tuple[str, ...] | str:
    """Tokens, or the error text; cached because every replica of a deployment splits the same text."""
    try:
        return tuple(shlex.split(text))
    except ValueError as err:
        return str(err)


def split(template: Template) -> list[str]:
    """POSIX-split a template; unbalanced quotes are the template's fault, said where."""
    tokens = _split_text(template.text)
    if isinstance(tokens, str):
        raise InputError([template.problem(f"cannot split into arguments: {tokens} (check the quotes)")])
    return list(tokens)


def check_variables(template: Template, names: Sequence[str], secret_names: Sequence[str] = ()) -> None:
    """Fail if the template uses a variable outside ``names`` or one that holds a secret."""
    for token in split(template):
        if "{" not in token:
            continue
        _, used = _compiled(template, token)
        for name in sorted(used):
            if name in secret_names:
                raise InputError([template.problem(
                    f"'{{{{{name}}}}}' holds a secret: rendering it into the command line would show it "
                    "in plan output and 'docker inspect'; let the engine read it from its environment")])
            if name not in names:
                known = sorted(set(names))
                raise InputError([template.problem(
                    f"unknown variable '{{{{{name}}}}}'{did_you_mean(name, known)}; available: "
                    f"{', '.join(known)}; an environment variable becomes available when set in "
                    "default_env, the version's env or the deployment's env")])


def _compiled(template: Template, token: str):
    try:
        return _compile(token)
    except _Refused as err:
        raise InputError([template.problem(
            f"template in argument '{token[:60]}': {err} cannot be used; command templates substitute "
            "{{variables}} (with if/else and the filters default, lower, upper, trim, string, int, first, last, "
            "length)")]) from None
    except jinja2.TemplateSyntaxError as err:
        raise InputError([template.problem(
            f"template error in argument '{token}': {err.message}; each argument is rendered on its own, "
            "so a {% ... %} block must sit inside one argument")]) from None


def render(template: Template | None, variables: Variables, secret_names: Sequence[str] = ()) -> list[str]:
    """Render a template into argv. ``None`` renders to no arguments."""
    if template is None:
        return []
    values = variables.as_dict()
    check_variables(template, list(values), secret_names)
    out = []
    for token in split(template):
        if "{" not in token:
            out.append(token)
            continue
        compiled, _ = _compiled(template, token)
        try:
            text = compiled.render(values)
        except jinja2.exceptions.SecurityError as err:
            raise InputError([template.problem(f"template not allowed: {err}")]) from None
        except jinja2.TemplateError as err:
            raise InputError([template.problem(f"template error in argument '{token}': {err}")]) from None
        except (ArithmeticError, ValueError, TypeError, LookupError, MemoryError) as err:
            raise InputError([template.problem(f"template error in argument '{token}': {err}")]) from None
        if len(text) > MAX_ARGUMENT:
            raise InputError([template.problem(f"argument '{token[:40]}' renders to {len(text):,} characters; the "
                                               f"limit is {MAX_ARGUMENT:,}")])
        out.append(text)
    return out
