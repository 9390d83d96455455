import torch

from connectome.pruning import criteria
from connectome.pruning.statistics import GradStats


def stats_for(grad, second, variance=None, n=100):
    variance = variance if variance is not None else torch.zeros_like(grad)
    return GradStats({"w": grad}, {"w": second}, {"w": variance}, n, 0.0, 0.0)


W = torch.tensor([0.5, -2.0, 1.0, 3.0])
G = torch.tensor([0.1, 0.0, -0.4, 0.2])
F = torch.tensor([0.2, 0.01, 1.0, 0.04])


def order(name, stats=None, **options):
    s = criteria.get(name, **options).scores("w", W, stats or stats_for(G, F), torch.Generator().manual_seed(0))
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
    s = criteria.get("dloss").scores("w", W, stats_for(G, F), None)
    assert torch.allclose(s, -G * W + 0.5 * F * W * W)
    assert s.argsort().tolist() == [3, 0, 1, 2]  # -0.42, -0.025, 0.02, 0.9


def test_connectome_charges_uncertain_gradients():
    var = torch.tensor([0.0, 0.0, 0.0, 1e4])  # weight 3's gradient is pure noise
    plain = criteria.get("dloss").scores("w", W, stats_for(G, F, var), None)
    bound = criteria.get("connectome", z=2.0).scores("w", W, stats_for(G, F, var), None)
    assert plain.argmin() == 3 and bound.argmin() != 3
    assert torch.allclose(bound[:3], plain[:3])  # no noise, no charge


def test_random_is_seeded():
    a = criteria.get("random").scores("w", W, None, torch.Generator().manual_seed(1))
    b = criteria.get("random").scores("w", W, None, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_restore_prediction():
    s = stats_for(G, F)
    assert torch.allclose(criteria.predicted_restore(W, s, "w"), G * W + 0.5 * F * W * W)
