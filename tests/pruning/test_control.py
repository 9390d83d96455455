"""Step control (connectome.pruning.control): the rules as objects, and the greedy method taking one."""

import torch

from connectome.evaluate import Metrics
from connectome.pruning.control import FirstRule, MeasuredRule, rule_for
from connectome.pruning.methods.greedy import Greedy
from connectome.pruning.settings import PruneSettings
from connectome.pruning.setup import Runtime, prepare

SMALL = {"model": "lenet_300_100", "remove": "8000", "calib_samples": 600, "eval_samples": 300, "batch_size": 100,
         "method": "greedy"}


def metrics(correct: list[int]) -> Metrics:
    c = torch.tensor(correct, dtype=torch.float64)
    return Metrics(top1=100 * float(c.mean()), top5=100.0, loss=0.0, samples=len(correct), per_correct=c)


def test_the_settings_choose_the_rule():
    assert type(rule_for(PruneSettings(**SMALL))) is MeasuredRule
    assert type(rule_for(PruneSettings(**SMALL, keep_descents=False))) is FirstRule


def test_only_the_measured_rule_keeps_a_descent_and_not_one_that_costs_top1():
    s = PruneSettings(**SMALL)
    same = metrics([1, 0] * 50)
    worse = metrics([0, 0] * 50)  # every correct image lost: top-1 measurably fell
    assert MeasuredRule(s).descent(-0.1, 0.01, same, same)
    assert not MeasuredRule(s).descent(-0.1, 0.01, worse, same)
    assert not MeasuredRule(s).descent(-0.01, 0.01, same, same)  # inside the noise
    assert not FirstRule(s).descent(-0.1, 0.01, same, same)


def test_the_first_rule_grows_after_every_kept_step_the_measured_rule_only_while_the_ratio_holds():
    s = PruneSettings(**SMALL)  # grow 1.5, ratio_hold 0.5
    args = dict(stderr=0.0, excess=None, smallest=10, largest=10_000)
    assert FirstRule(s).next_size(100, True, -0.01, -0.1, **args) == 150
    assert MeasuredRule(s).next_size(100, True, -0.01, -0.1, **args) == 100  # measured 1/10 of the prediction
    assert MeasuredRule(s).next_size(100, False, 0.3, -0.1, **args) == 50


class FixedSize(MeasuredRule):
    """A rule of one's own: every step the size of the first."""

    def next_size(self, size, *args, **kwargs):
        return size


def test_greedy_takes_the_rule_it_is_given(tmp_path):
    s = PruneSettings.from_mapping({**SMALL, "tolerance": 1000.0})  # every step within its allowances
    run = Greedy(prepare(s), tmp_path, runtime=Runtime(progress=False), rule=FixedSize(s))
    run.run()
    sizes = [r["size"] for r in run.log if r["phase"] == "remove"]
    first = sizes[0]
    assert run.flat.removed() == 8000 and all(size == first for size in sizes[:-1]) and sizes[-1] <= first
    default = Greedy(prepare(s), tmp_path / "default", runtime=Runtime(progress=False))
    default.run()
    assert [r["size"] for r in default.log if r["phase"] == "remove"][1] > first  # the default grows
