"""The YAML reader's two paths agree: a plain document read fast without positions gives the same data, and
the same positions when one is asked for, as the composer that records them; anything unusual takes the
composer, which says where the problem is."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from documents.problems import InputError
from documents.yaml_reader import (
    _CONTROL,
    _UNUSUAL,
    LIMITS,
    Limits,
    _Composer,
    _control,
    _Loader,
    _plain_document,
    parse_yaml,
)

from .conftest import ROOT

#: every YAML file the tests and the project ship: specs, catalogs, stacks, inventories, locks, broken files
FILES = sorted(p for d in ("tests/data", "tests/malformed", "backends", "stack", "inventory")
               for p in (ROOT / d).rglob("*.y*ml"))


def _composed(text: str, limits: Limits = LIMITS):
    composer = _Composer("t.yaml", limits)
    loader = _Loader(text)
    try:
        composer.run(loader.get_event)
    finally:
        loader.dispose()
    return composer


def test_the_files_are_there():
    assert len(FILES) > 50
    assert {p.name for p in FILES} >= {"demo.yaml", "spec.yaml", "demo.lock.yaml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_both_paths_read_the_same_data_and_marks(path: Path):
    text = path.read_text(encoding="utf-8")
    try:
        composer = _composed(text)
    except (InputError, yaml.YAMLError):  # a broken file: the plain path must leave it to the composer
        assert _plain_document(text, LIMITS) is _UNUSUAL
        return
    plain = _plain_document(text, LIMITS)
    if composer.problems:
        assert plain is _UNUSUAL
        return
    if plain is not _UNUSUAL:
        assert plain == composer.result
        assert repr(plain) == repr(composer.result)  # same types (1 vs 1.0 vs True) and key order
    data, marks = parse_yaml(text, "t.yaml")
    assert data == composer.result
    assert marks.values == composer.marks.values
    assert marks.keys == composer.marks.keys


def test_the_project_files_take_the_plain_path():
    # the speed of loading a big stack rests on it: a file we ship that stops being plain is a regression
    for path in [ROOT / "stack/demo.yaml", ROOT / "inventory/demo.yaml", ROOT / "stack/demo.lock.yaml",
                 *sorted((ROOT / "backends").rglob("spec.yaml"))]:
        assert _plain_document(path.read_text(encoding="utf-8"), LIMITS) is not _UNUSUAL, path


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n",                      # anchor and alias
    "a: !!str 1\n",                          # a tag on a value
    "!!map {a: 1}\n",                        # a tag on a mapping
    "base: {x: 1}\nthing:\n  <<: {y: 2}\n",  # a merge key
    "'<<': 1\n",                             # a quoted << (a name) is left to the composer too
    "a: 1\na: 2\n",                          # a duplicate key
    "a: 1\n---\nb: 2\n",                     # a second document
    "? [a, b]\n: 1\n",                       # a list as a key
    "a: 99999999999999999999999999\n",       # a number out of range
    "a: .inf\n",                             # not finite
    "a: <<\n",                               # a plain << as a value
    "a: [1, 2\n",                            # a syntax error
])
def test_unusual_documents_are_left_to_the_composer(text):
    assert _plain_document(text, LIMITS) is _UNUSUAL


def test_limits_are_the_composers():
    deep = "a: " + "[" * 10 + "]" * 10 + "\n"
    assert _plain_document(deep, Limits(max_depth=11)) == {"a": [[[[[[[[[[]]]]]]]]]]}
    assert _plain_document(deep, Limits(max_depth=10)) is _UNUSUAL
    with pytest.raises(InputError, match="nested more than 10 levels"):
        parse_yaml(deep, "t.yaml", Limits(max_depth=10))
    many = "[" + ", ".join(["1"] * 50) + "]\n"  # 51 values with the list itself
    assert _plain_document(many, Limits(max_values=51)) == [1] * 50
    assert _plain_document(many, Limits(max_values=50)) is _UNUSUAL


def test_positions_are_found_when_first_asked_for():
    text = "a: 1\nlist:\n  - x\n  - {deep: true}\n"
    data, marks = parse_yaml(text, "t.yaml")
    assert data == {"a": 1, "list": ["x", {"deep": True}]}
    assert marks.of_value(("list", 1, "deep")) == (4, 12)
    assert marks.of_key(("list",)) == (2, 1)
    problem = marks.problem(("list", 0), "no")
    assert (problem.file, problem.line, problem.col, problem.field) == ("t.yaml", 3, 5, "list[0]")


def test_a_plain_document_of_one_scalar_or_nothing():
    assert _plain_document("hello\n", LIMITS) == "hello"
    assert _plain_document("", LIMITS) is None
    assert parse_yaml("", "t.yaml")[0] is None


@pytest.mark.parametrize("before", ["key: ab", "key: é ab", "name: \ufeffx "])
def test_the_control_check_finds_what_the_expression_finds(before):
    """``_control`` clears ASCII text by deleting the allowed bytes; every character (all of ASCII, the C1
    range, NEL, the two non-characters and a few others) is found or passed exactly as ``_CONTROL`` does, in
    ASCII text and in text that is not."""
    chars = [chr(c) for c in range(0x100)] + ["\u2028", "\ufeff", "\ufffd", "\ufffe", "\uffff", "\U0001f600"]
    flagged = 0
    for c in chars:
        text = f"{before}{c}z\n  more: 1\n"
        want = _CONTROL.search(text)
        got = _control(text)
        assert (got and (got.start(), got.group())) == (want and (want.start(), want.group())), repr(c)
        flagged += want is not None
    assert flagged == 29 + 1 + 31 + 2  # C0 but tab, LF, CR; DEL; C1 but NEL; U+FFFE and U+FFFF
