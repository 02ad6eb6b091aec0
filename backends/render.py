"""Turn a backend spec + a deployment into exec-form argv: never a shell.

GPUStack substitutes ``{{model_path}} {{model_name}} {{port}} {{worker_ip}} {{gpu_count}}
{{gpu_ids}}`` and ``{{VAR}}`` (any environment variable in scope), then splits the string
POSIX-style.  We split first and render each argument on its own (jinja2 sandbox, strict
undefined), so a substituted value is always exactly one argument: a model named
``x; rm -rf /`` stays one argv element and no value can smuggle in extra flags.  For every
value without spaces or quotes this gives the same argv as substitute-then-split.

The jinja2 sandbox lives in ``backends.sandbox``, loaded the first time a token needs it: checking a token
that only substitutes ``{{ name }}`` reads the names off it, so ``plan``, ``validate`` and ``lock`` on
specs written that way never load jinja2 (a quarter of gpufleet's start-up).
"""
from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence

from documents.problems import InputError, Problem, did_you_mean
from documents.yaml_reader import Marks

BUILTIN_VARIABLES = ("model_path", "model_name", "port", "worker_ip", "gpu_count", "gpu_ids")
SECRET_PREFIX = "secret:"

#: a token whose only template syntax is ``{{ name }}``: the names it uses are read off it, without jinja2
#: (``backends.sandbox``, which reads the same names: tests/test_render.py). Anything else in braces, a line
#: break (jinja2 normalises them and drops a last one) or a name jinja2 reads as a word or constant is not.
_PLAIN_TOKEN = re.compile(r"(?:[^{}\r\n]|\{\{ *[A-Za-z_][A-Za-z0-9_]* *\}\})*\Z")
_NAME = re.compile(r"\{\{ *([A-Za-z_][A-Za-z0-9_]*) *\}\}")
_JINJA_WORDS = frozenset({"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False",
                          "None"})


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
        for name in sorted(_used(template, token)):
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


@functools.lru_cache(maxsize=4096)
def _plain_names(token: str) -> frozenset[str] | None:
    """The names a token of only ``{{ name }}`` substitutions uses; None for any other token."""
    if not _PLAIN_TOKEN.match(token):
        return None
    names = frozenset(_NAME.findall(token))
    return None if names & _JINJA_WORDS else names


def _used(template: Template, token: str) -> frozenset[str]:
    names = _plain_names(token)
    return names if names is not None else _compiled(template, token)[1]


def _compiled(template: Template, token: str):
    # jinja2 is loaded only for a token that needs it (see the module docstring)
    from . import sandbox

    try:
        return sandbox.compile_token(token)
    except sandbox.Refused as err:
        raise InputError([template.problem(
            f"template in argument '{token[:60]}': {err} cannot be used; command templates substitute "
            "{{variables}} (with if/else and the filters default, lower, upper, trim, string, int, first, last, "
            "length)")]) from None
    except sandbox.TemplateSyntaxError as err:
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
        from . import sandbox

        try:
            text = compiled.render(values)
        except sandbox.SecurityError as err:
            raise InputError([template.problem(f"template not allowed: {err}")]) from None
        except sandbox.TemplateError as err:
            raise InputError([template.problem(f"template error in argument '{token}': {err}")]) from None
        except (ArithmeticError, ValueError, TypeError, LookupError, MemoryError) as err:
            raise InputError([template.problem(f"template error in argument '{token}': {err}")]) from None
        if len(text) > sandbox.MAX_ARGUMENT:
            raise InputError([template.problem(f"argument '{token[:40]}' renders to {len(text):,} characters; the "
                                               f"limit is {sandbox.MAX_ARGUMENT:,}")])
        out.append(text)
    return out
