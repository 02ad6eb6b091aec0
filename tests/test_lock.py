"""The lock file: fast line reader and full YAML reader agree; hand edits still load or fail clearly."""
from __future__ import annotations

import yaml

from stack.lock import _fast_parse, read_lock, render_lock
from stack.placement import place

from .fleets import cpu_only, fleet, nvidia_a100x4, nvidia_h100x8
from .test_placement import d


def _placement():
    return place(fleet(nvidia_h100x8("h1"), nvidia_a100x4("a1"), cpu_only("c1")),
                 [d("big", 0, n=4), d("s", 0, vram=10), d("s", 1, vram=10), d("tts", 0, fw="cpu", n=0)])


def test_fast_and_yaml_readers_agree(tmp_path):
    text = render_lock("prod", _placement())
    assert _fast_parse(text) == yaml.safe_load(text)
    fast = tmp_path / "a.lock.yaml"
    fast.write_text(text)
    block = tmp_path / "b.lock.yaml"  # the same content as a person might rewrite it
    block.write_text(yaml.safe_dump(yaml.safe_load(text), default_flow_style=False))
    assert _fast_parse(block.read_text()) is None
    assert read_lock(fast) == read_lock(block)
    assert read_lock(fast)["big/0"].gpus == (0, 1, 2, 3)


def test_uuids_are_recorded_when_known(tmp_path):
    path = tmp_path / "l.yaml"
    path.write_text(render_lock("s", _placement()))
    lock = read_lock(path)
    assert lock["s/0"].uuids == ("GPU-A100-0",) or lock["s/0"].host == "h1"
    assert lock["tts/0"].gpus == () and lock["tts/0"].vendor is None


def test_empty_and_duplicate_entries(tmp_path):
    path = tmp_path / "l.yaml"
    path.write_text(render_lock("s", place(fleet(cpu_only()), [])))
    assert read_lock(path) == {}
    line = render_lock("s", _placement()).splitlines()[-1]
    path.write_text(render_lock("s", _placement()) + line + "\n")
    import pytest

    from documents.problems import InputError

    with pytest.raises(InputError) as err:
        read_lock(path, "stack/s.lock.yaml")
    assert "duplicate key 'tts/0'" in str(err.value)
