"""Step proposal and acceptance as small functions."""

import math

import torch
from torch import nn

from connectome.pruning import step
from connectome.pruning.flat import FlatWeights
from connectome.pruning.statistics import GradStats


def flat_of(*shapes):
    torch.manual_seed(0)
    return FlatWeights({f"w{i}": nn.Parameter(torch.randn(s)) for i, s in enumerate(shapes)})


def stats_of(flat, grad, second):
    g, f = flat.split(grad), flat.split(second)
    return GradStats(grad=g, second=f, variance={n: torch.zeros_like(t) for n, t in g.items()}, samples=10,
                     loss=1.0, top1=50.0)


def test_descents_are_kept_and_only_harm_defers():
    assert step.is_descent(-0.05, 0.01) and not step.is_descent(-0.015, 0.01)
    assert step.hurts(0.05, 0.01, 0.0) and not step.hurts(0.015, 0.01, 0.0)
    # The first version's rule rejected this (predicted -0.28, measured -0.049): the new one keeps it.
    assert not step.as_predicted(-0.049, -0.28, 0.01, 0.0037, 0.0, 4.0) and step.is_descent(-0.049, 0.0037)


def test_unit_caps_limit_a_step_per_output_unit():
    flat = flat_of((4, 1, 3, 3), (2, 5))  # a depthwise-like conv (4 kernels of 9 taps) and a 2x5 linear
    units, sizes = flat.units()
    assert units.tolist()[:9] == [0] * 9 and units.tolist()[36:] == [4] * 5 + [5] * 5
    assert sizes.tolist() == [9, 9, 9, 9, 5, 5]
    caps = (sizes * 0.34).floor().clamp(min=1).long()  # 3 taps of a kernel, 1 weight of a row
    candidates = torch.arange(46)  # in score order: all of kernel 0 first
    chosen = step.cap_per_unit(candidates, units, caps, 8)
    assert chosen.tolist() == [0, 1, 2, 9, 10, 11, 18, 19]
    assert len(step.cap_per_unit(candidates, units, caps, 20)) == 20  # caps yield when they run out


def test_unknown_statistics_rank_last():
    from connectome.pruning.scores import get
    flat = flat_of((3, 4))
    grad = torch.full((12,), 0.1)
    second = torch.full((12,), 0.01)
    grad[[2, 5]] = 0.0
    second[[2, 5]] = 0.0
    scores = step.ranked_scores(flat, get("fisher"), stats_of(flat, grad, second), torch.Generator())
    assert set(torch.argsort(scores)[-2:].tolist()) == {2, 5}  # fisher would call them free (score 0)
    plain = step.ranked_scores(flat, get("fisher"), stats_of(flat, grad, second), torch.Generator(), unknown_last=False)
    assert set(torch.argsort(plain)[:2].tolist()) == {2, 5}


def test_dominant_weights_of_a_prediction():
    flat = flat_of((10,))
    grad = torch.zeros(10)
    grad[3] = 100.0 * math.copysign(1, float(flat.base[3]))  # one weight predicted to help enormously
    grad[[0, 1]] = 0.01 * flat.base[[0, 1]].sign()
    idx = torch.arange(10)
    assert step.dominant(flat, stats_of(flat, grad, torch.zeros(10)), idx).tolist() == [3]


def test_a_loss_descent_that_costs_top1_is_no_descent():
    """MobileNetV3-Small on Fashion-MNIST: one step lowered the acceptance loss 0.491 -> 0.410 while
    top-1 fell 90.0% -> 85.2% (500 images). Paired over the same images that fall is far outside noise."""
    from connectome.evaluate import Metrics
    n = 500
    before_hits = torch.zeros(n, dtype=torch.float64)
    before_hits[:450] = 1  # 90.0%
    after_hits = before_hits.clone()
    after_hits[:30] = 0  # 30 images lost, 6 gained: 85.2%
    after_hits[450:456] = 1
    loss = torch.full((n,), 0.5, dtype=torch.float64)
    before = Metrics(90.0, 99.0, 0.491, n, per_sample=loss, per_correct=before_hits)
    after = Metrics(85.2, 99.0, 0.410, n, per_sample=loss - 0.08, per_correct=after_hits)
    assert step.top1_falls(after, before)
    # One image lost and one gained is no fall; nor is a single image lost among 500.
    same = before_hits.clone()
    same[0], same[460] = 0, 1
    assert not step.top1_falls(Metrics(90.0, 99.0, 0.4, n, per_sample=loss, per_correct=same), before)
    one = before_hits.clone()
    one[0] = 0
    assert not step.top1_falls(Metrics(89.8, 99.0, 0.4, n, per_sample=loss, per_correct=one), before)


def test_pace_is_the_measured_cost_per_weight_of_the_last_kept_removals():
    log = [{"phase": "dense", "accepted": True, "size": 0},
           {"phase": "remove", "accepted": True, "size": 100, "actual": -0.05},  # a descent, outside the window
           {"phase": "remove", "accepted": True, "size": 200, "actual": 0.0004},
           {"phase": "remove", "accepted": False, "size": 600, "actual": 0.01},  # rejected steps do not count
           {"phase": "remove", "accepted": True, "size": 100, "actual": 0.0002, "forced": True},  # nor forced ones
           {"phase": "swap", "accepted": True, "size": 50, "actual": -0.001},  # nor swaps
           {"phase": "remove", "accepted": True, "size": 300, "actual": 0.0003},
           {"phase": "remove", "accepted": True, "size": 500, "actual": 0.0013}]
    assert math.isclose(step.pace(log), (0.0004 + 0.0003 + 0.0013) / 1000)
    assert step.pace(log[:2]) == 0.0  # descents cost nothing: never a negative allowance
    assert step.pace(log[:1]) == 0.0
    # A step of 675 weights costing 1.5e-6 per weight, after kept steps at 1.3e-6 per weight, fails the
    # size-proportional allowances alone (the demo's sawtooth) and passes with the pace.
    pace = step.pace([{"phase": "remove", "accepted": True, "size": 300, "actual": 0.00039}])
    assert not step.as_predicted(0.001, -0.0005, 1e-5, 0.0002, 2e-4, 4.0)
    assert step.as_predicted(0.001, -0.0005, 1e-5, 0.0002, 2e-4 + pace * 675, 4.0)
