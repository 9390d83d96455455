"""A registry and a publish name are bounded: what a hostile file or name asks for is one line."""

import json

import pytest

from connectome.errors import ConnectomeError
from connectome.weights.publish import _check_name
from connectome.weights.registry import MAX_BYTES, read_registry


def test_a_name_too_long_for_its_files_is_refused_in_one_line():
    _check_name("lenet_300_100." + "x" * 130)  # 144 characters: its file names fit
    with pytest.raises(ConnectomeError) as e:
        _check_name("lenet_300_100." + "x" * 300)
    assert "at most 150 characters" in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 300


def test_a_deeply_nested_registry_is_one_line(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # the JSON parser's recursion, exhausted
    with pytest.raises(ConnectomeError, match="is not a JSON registry"):
        read_registry(path)


def test_a_registry_larger_than_any_real_one_is_refused_unread(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"format": "x", "pad": "y" * (MAX_BYTES + 1)}))
    with pytest.raises(ConnectomeError, match="over 16 MB"):
        read_registry(path)
