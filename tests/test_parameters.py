"""Backend parameters tokenised and formatted exactly as GPUStack's own functions do.

tests/data/gpustack/parameters.json records, for each input, what GPUStack's flatten_to_argv and
_normalize_param_format returned (run at the commit it names); the port must agree on every case.
"""
from __future__ import annotations

import json

import pytest

from backends.parameters import (
    ParameterError,
    flatten_to_argv,
    merge,
    normalize_param_format,
)

from .conftest import ROOT

GOLDEN = json.loads((ROOT / "tests" / "data" / "gpustack" / "parameters.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[" ".join(c["backend_parameters"])[:40] or "empty"
                                                        for c in GOLDEN["cases"]])
def test_same_tokens_as_gpustack(case):
    flat = flatten_to_argv(case["backend_parameters"])
    assert flat == case["flatten_to_argv"]
    assert normalize_param_format(flat, "space") == case["space"]
    assert normalize_param_format(flat, "equal") == case["equal"]


def test_json_and_paths_with_spaces_stay_one_argument():
    # after '=' or as its own list item JSON is kept whole; GPUStack (and so gpufleet) shlex-splits
    # '--flag {json}' written in one item, which drops the quotes: the golden cases pin that too
    assert flatten_to_argv(['--speculative-config={"method": "ngram"}']) == ['--speculative-config={"method": "ngram"}']
    assert flatten_to_argv(["--speculative-config", '{"method": "ngram"}']) == ["--speculative-config",
                                                                               '{"method": "ngram"}']
    assert flatten_to_argv(["--chat-template", "/m/my t.jinja"]) == ["--chat-template", "/m/my t.jinja"]


def test_a_deployment_flag_replaces_the_default_and_defaults_can_be_dropped():
    defaults = flatten_to_argv(["--trust-remote-code", "--max-model-len=4096", "--dtype auto"])
    assert merge(defaults, flatten_to_argv(["--max-model-len 8192"])) == \
        ["--trust-remote-code", "--dtype", "auto", "--max-model-len", "8192"]
    assert merge(defaults, [], drop=["--trust-remote-code"]) == ["--max-model-len=4096", "--dtype", "auto"]


def test_unbalanced_quotes_are_a_parameter_error():
    with pytest.raises(ParameterError, match="check the quotes"):
        flatten_to_argv(["--x 'unclosed"])
