"""hubconf.py through torch.hub itself, from this checkout (source="local")."""

import importlib.util
from pathlib import Path

import pytest
import torch

from connectome.models.load import state_sha256
from connectome.weights import read_registry

REPO = Path(__file__).resolve().parents[2]


def lenet_entry() -> tuple[str, str, dict]:
    entries, _ = read_registry()
    name = next(n for n, e in entries.items() if e["base"]["model"] == "lenet_300_100")
    arch, tag = name.split(".", 1)
    return arch, tag, entries[name]


def test_entrypoints_are_generated_from_the_registry():
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    # What torch.hub.list shows: the public callables of hubconf.
    public = {n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_")}
    assert public == {e["arch"] for e in read_registry()[0].values()}
    arch, tag, _ = lenet_entry()
    assert tag in getattr(hub, arch).__doc__ and "torch" in hub.dependencies


def test_torch_hub_load_local():
    arch, tag, entry = lenet_entry()
    model = torch.hub.load(str(REPO), arch, weights=tag, source="local")
    assert not model.training and state_sha256(model.state_dict()) == entry["state_sha256"]
    assert model.transforms() is not None and model.weights.meta == entry["meta"]
    also = torch.hub.load(str(REPO), arch, weights=f"{arch}.{tag}", via="mask", source="local")
    assert state_sha256(also.state_dict()) == entry["state_sha256"]
    with pytest.raises(ValueError, match=tag):
        torch.hub.load(str(REPO), arch, source="local")
