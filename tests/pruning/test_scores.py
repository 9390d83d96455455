import math

import torch

from connectome.pruning import scores
from connectome.pruning.statistics import GradStats


def stats_for(grad, second, variance=None, n=100):
    variance = variance if variance is not None else torch.zeros_like(grad)
    return GradStats({"w": grad}, {"w": second}, {"w": variance}, n, 0.0, 0.0)


W = torch.tensor([0.5, -2.0, 1.0, 3.0])
G = torch.tensor([0.1, 0.0, -0.4, 0.2])
F = torch.tensor([0.2, 0.01, 1.0, 0.04])


def order(name, stats=None, **options):
    s = scores.get(name, **options).scores("w", W, stats or stats_for(G, F), torch.Generator().manual_seed(0))
    return s.argsort().tolist()


def test_magnitude():
    assert order("magnitude") == [0, 2, 1, 3]


def test_taylor_is_abs_g_w():
    # |g*w| = 0.05, 0, 0.4, 0.6
    assert order("taylor") == [1, 0, 2, 3]


def test_fisher_is_half_f_w2():
    # 1/2*F*w^2 = 0.025, 0.02, 0.5, 0.18
    assert order("fisher") == [1, 0, 3, 2]


def test_dloss_is_expected_loss_change():
    s = scores.get("dloss").scores("w", W, stats_for(G, F), None)
    assert torch.allclose(s, -G * W + 0.5 * F * W * W)
    assert s.argsort().tolist() == [3, 0, 1, 2]  # -0.42, -0.025, 0.02, 0.9


def test_connectome_charges_uncertain_gradients():
    var = torch.tensor([0.0, 0.0, 0.0, 1e4])  # weight 3's gradient is pure noise
    plain = scores.get("dloss").scores("w", W, stats_for(G, F, var), None)
    bound = scores.get("connectome", confidence=2.0).scores("w", W, stats_for(G, F, var), None)
    assert plain.argmin() == 3 and bound.argmin() != 3
    assert torch.allclose(bound[:3], plain[:3])  # no noise, no charge


def test_random_is_seeded():
    a = scores.get("random").scores("w", W, None, torch.Generator().manual_seed(1))
    b = scores.get("random").scores("w", W, None, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_restore_prediction():
    s = stats_for(G, F)
    assert torch.allclose(scores.predicted_restore(W, s, "w"), G * W + 0.5 * F * W * W)


def test_only_wanda_needs_input_norms():
    assert {n for n, c in scores.REGISTRY.items() if c.needs_input_norms} == {"wanda", "wanda_row"}
    # Not ranked by gradients: the loop's rule for zero-gradient weights leaves their order alone.
    assert not scores.REGISTRY["wanda"].needs_statistics and not scores.REGISTRY["wanda_row"].needs_statistics


def wanda_stats(w, norm):
    z = torch.zeros_like(w)
    return GradStats({"w": z}, {"w": z}, {"w": z}, 100, 0.0, 0.0, {"w": norm})


def test_wanda_is_abs_w_times_input_norm():
    w = torch.tensor([[0.5, -2.0, 1.0], [3.0, -0.1, 0.2]])
    norm = torch.tensor([4.0, 0.1, 1.0]).expand(2, 3)  # per input feature, the same for every row
    s = scores.get("wanda").scores("w", w, wanda_stats(w, norm), None)
    assert torch.equal(s, w.abs() * norm)
    assert s.flatten().argsort().tolist() == [4, 1, 5, 2, 0, 3]  # 0.01, 0.2, 0.2, 1, 2, 12


def test_wanda_without_input_norms_says_so():
    import pytest

    from connectome.errors import ConnectomeError
    with pytest.raises(ConnectomeError, match="input_norms=True"):
        scores.get("wanda").scores("w", W, stats_for(G, F), None)


def test_wanda_row_ranks_within_rows():
    """Row 1's weights are all larger than row 0's: the global wanda takes row 0 first, wanda_row takes
    the same share of each row, in each row's own order."""
    w = torch.tensor([[0.3, 0.1, 0.4, 0.2], [30.0, 50.0, 10.0, 40.0]])
    norm = torch.ones_like(w)
    stats = wanda_stats(w, norm)
    plain = scores.get("wanda").scores("w", w, stats, None)
    row = scores.get("wanda_row").scores("w", w, stats, None)
    assert row.shape == w.shape
    assert torch.equal(row.argsort(dim=1), plain.argsort(dim=1))  # the order within each row is wanda's
    assert torch.allclose(row, torch.tensor([[2.5, 0.5, 3.5, 1.5], [1.5, 3.5, 0.5, 2.5]]) / 4)
    assert torch.topk(plain.flatten(), 4, largest=False).indices.div(4, rounding_mode="floor").tolist() == [0] * 4
    lowest = torch.topk(row.flatten(), 4, largest=False).indices
    assert sorted(lowest.tolist()) == [1, 3, 4, 6]  # two from each row, each row's two smallest


def test_wanda_row_cut_takes_the_same_share_of_every_row():
    """Rows of 3 (a linear layer) and of 8 (a conv's output channels) ranked together by a global cut:
    every row loses floor(t*n) or ceil(t*n) of its n weights, t the quantile of the cut."""
    gen = torch.Generator().manual_seed(0)
    layers = {"a": torch.randn(5, 3, generator=gen), "b": torch.randn(4, 2, 2, 2, generator=gen)}
    crit = scores.get("wanda_row")
    by_layer = {n: crit.scores(n, w, GradStats({}, {}, {}, 1, 0.0, 0.0,
                                               {n: torch.rand(w.shape, generator=gen)}), None)
                for n, w in layers.items()}
    flat = torch.cat([s.flatten() for s in by_layer.values()])
    order = flat.argsort(stable=True)
    for k in range(flat.numel() + 1):
        removed = torch.zeros_like(flat, dtype=torch.bool)
        removed[order[:k]] = True
        t = flat[order[k - 1]].item() if k else 0.0
        a, b = removed[:15].view(5, 3).sum(1), removed[15:].view(4, 8).sum(1)
        for counts, n in ((a, 3), (b, 8)):
            assert all(math.floor(t * n) <= c <= math.ceil(t * n) for c in counts.tolist()), (k, counts)
            assert int(counts.max() - counts.min()) <= 1
