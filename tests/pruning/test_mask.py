import numpy as np
import pytest
import torch

from connectome.pruning.mask import Mask


def random_mask(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Mask({"a.weight": torch.rand(7, 13, generator=g) > 0.3, "b.weight": torch.rand(3, 3, 5, 5, generator=g) > 0.5})


def test_validated_on_construction():
    with pytest.raises(ValueError):
        Mask({"w": torch.ones(3)})


def test_packbits_round_trip(tmp_path):
    m = random_mask()
    m.save(tmp_path / "mask.safetensors", {"base_model": "x"})
    back = Mask.load(tmp_path / "mask.safetensors")
    assert back == m and back.removed() == m.removed()
    # The stored bytes are numpy.packbits of the flattened mask (big-endian bits, 1 = kept).
    from safetensors.numpy import load_file
    raw = load_file(str(tmp_path / "mask.safetensors"))
    assert np.array_equal(raw["a.weight"], np.packbits(m["a.weight"].numpy().reshape(-1)))
    assert raw["a.weight"].nbytes == -(-7 * 13 // 8)


def test_apply_zeroes_exactly_the_removed_weights():
    m = random_mask()
    state = {"a.weight": torch.randn(7, 13), "b.weight": torch.randn(3, 3, 5, 5), "b.bias": torch.randn(3)}
    out = m.apply(state)
    assert torch.equal(out["b.bias"], state["b.bias"])
    for n in m.names():
        assert torch.equal(out[n][m[n]], state[n][m[n]]) and (out[n][~m[n]] == 0).all()


def test_check_fits_names_the_problem():
    with pytest.raises(ValueError, match="shape"):
        random_mask().check_fits({"a.weight": torch.zeros(7, 12), "b.weight": torch.zeros(3, 3, 5, 5)})
