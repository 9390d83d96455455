"""bench/lottery.py's plan: which trainings each network's benchmark runs, in which order."""

import importlib.util
from pathlib import Path

import pytest
import torch

from connectome.lottery.networks import build, initial_state, layer_kinds
from connectome.lottery.settings import LotterySettings
from connectome.lottery.strategies import make_strategy
from connectome.pruning.mask import Mask

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lottery", ROOT / "bench" / "lottery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lenet_phases_are_unchanged(bench):
    assert bench.phases([0, 1], []) == [(0, 18, [3, 7, 12, 15, 18]), (1, 18, [3, 7, 12, 15, 18])]
    assert bench.phases([0], ["1:18:2,4"], bench.NETWORKS["lenet_300_100_mnist"])[-1] == (1, 18, [2, 3, 4, 7, 12, 15, 18])


def test_conv2_goes_to_3_6_percent_on_every_seed_before_deeper(bench):
    assert bench.phases([0, 1], [], bench.NETWORKS["conv2"]) == [
        (0, 15, [3, 7, 11, 15]), (1, 15, [3, 7, 11, 15]), (0, 18, [3, 7, 11, 15, 18]), (1, 18, [3, 7, 11, 15, 18])]


@pytest.mark.parametrize("model, percents", [("conv2", [51.4, 21.2, 8.8, 3.7, 1.9]), ("conv4", [53.5, 23.9, 9.2, 3.8]),
                                             ("conv6", [56.4, 26.6, 8.9, 3.6])])
def test_claim_levels_are_the_papers_percentages(bench, model, percents):
    s = LotterySettings.from_recipe(str(ROOT / "recipes" / f"lottery-{model}-cifar10.yaml"))
    kinds = layer_kinds(build(model, "cifar10"))
    init = initial_state(model, "cifar10", 0)
    mask, strategy, got = Mask({n: torch.ones(init[n].shape, dtype=torch.bool) for n in kinds}), make_strategy(s, kinds), []
    for level in range(1, bench.NETWORKS[model].claim_levels[-1] + 1):
        mask = strategy.prune(init, mask)
        if level in bench.NETWORKS[model].claim_levels:
            got.append(round(100 * mask.kept() / mask.total(), 1))
    assert got == percents
