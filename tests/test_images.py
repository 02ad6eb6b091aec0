"""The images shipped backends name exist: GPUStack's runner images are checked against the list
GPUStack publishes for its release (docs/image-selector/versions/v2.2.3.json, kept in tests/data)."""
from __future__ import annotations

import json

import yaml

from stack.schema import ModelFetch

from .conftest import ROOT

PUBLISHED = set(json.loads((ROOT / "tests" / "data" / "gpustack" / "image-selector-v2.2.3.json").read_text()))


def shipped_images() -> dict[str, str]:
    out = {}
    for path in sorted((ROOT / "backends").glob("*/spec.yaml")):
        data = yaml.safe_load(path.read_text())
        for spec in data if isinstance(data, list) else [data]:
            for version, config in spec["version_configs"].items():
                out[f"{spec['backend_name']} {version}"] = config["image_name"]
    return out


def test_every_gpustack_runner_image_we_ship_is_one_gpustack_publishes():
    runner = {k: v for k, v in shipped_images().items() if v.startswith("gpustack/runner:")}
    assert len(runner) >= 6  # MindIE and VoxBox at least
    missing = {k: v for k, v in runner.items() if v not in PUBLISHED}
    assert not missing, missing


def test_the_default_fetch_image_is_a_gpustack_release():
    image = ModelFetch().image
    name, tag = image.split(":")
    assert name == "gpustack/gpustack"
    # the runner images above are those of this release, and the release is the GPUStack source we port
    assert tag == "v2.2.3"
