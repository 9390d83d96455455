"""The loop state as a typed record: saved and read back, refused when unreadable or of other settings."""

import pytest
import torch

from connectome.errors import ConnectomeError
from connectome.pruning.mask import Mask
from connectome.pruning.settings import PruneSettings
from connectome.pruning.state import LoopState


def test_round_trip_and_read_without_tensors(tmp_path):
    s = PruneSettings(model="m", remove="10")
    st = LoopState(size=7, step_index=3, cycles_done=1, elapsed=2.5, target=10, prunable=20,
                   log=[{"step": 0, "removed": 0}, {"step": 1, "removed": 7}])
    mask = Mask({"w": torch.tensor([True, False, True])})
    st.save(tmp_path / "state.safetensors", mask, s)
    again, m = LoopState.load(tmp_path / "state.safetensors", s)
    assert again == st and m == mask
    assert LoopState.read(tmp_path / "state.safetensors") == st


def test_other_settings_and_truncated_files_are_refused(tmp_path):
    s = PruneSettings(model="m", remove="10")
    path = tmp_path / "state.safetensors"
    LoopState(size=1).save(path, Mask({"w": torch.ones(3, dtype=torch.bool)}), s)
    with pytest.raises(ConnectomeError, match=r"other settings \(seed\)"):
        LoopState.load(path, PruneSettings(model="m", remove="10", seed=1))
    LoopState.load(path, PruneSettings(model="m", remove="10", device="cpu", eval_every=1))  # runtime may differ
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ConnectomeError, match="unreadable"):
        LoopState.load(path, s)
    with pytest.raises(ConnectomeError, match="unreadable"):
        LoopState.read(path)
