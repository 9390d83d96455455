"""Step control: the rules the greedy method judges and sizes its steps by, as objects in a list.

After each step the loop records its `Outcome` and asks every rule of its list, in order:
- `allowance`: the loss the step may spend beyond its prediction (summed over the rules);
- `judge`: the verdict so far -> the verdict (kept, a descent, forced);
- `set_aside`: for a rejected step, the weights to defer (ranked last from now on);
- `next_size`: the size so far -> the size of the next step.
Each rule holds its own parameters, read from the settings once (`rules_for`); a rule of one's own is one
more object in the list, and a later rule has the last word. Every hook defaults to changing nothing.

The two lists the settings choose between (--keep-descents) share the core test (step.as_predicted: the
measured change within the prediction plus its allowances), grow after a kept step and shrink after a
rejected one. They differ in what else counts:
- `prediction_only` (--no-keep-descents, the first version's control): a step is kept only as
  predicted, every kept step grows the next one, and a smallest step that fails has all its weights
  deferred.
- `measured_descents`, the default: a step whose loss measurably fell is kept however much more was
  predicted; sizes follow the measured/predicted ratio and the size where the two would part (the field's
  rule: set the size where measured and predicted change part ways); a harmless smallest step is kept;
  a failed step's few dominant weights are deferred rather than all of them.
"""

import math
from dataclasses import dataclass, field, replace

import torch

from connectome.evaluate import Metrics
from connectome.pruning import step


@dataclass(frozen=True)
class Outcome:
    """One step as measured, before any rule judged it. Changes are of the acceptance objective."""
    size: int  # the size the step was tried at
    min_size: int  # the bounds of the next size
    max_size: int
    weights: int  # weights it zeroed (fewer than `size` at the end of a run)
    swapping: bool  # a delete-and-restore step after the target
    predicted: float | None  # by the quadratic model (None: no statistics)
    curvature: float | None  # the prediction's curvature part, sum(1/2*F*w^2) >= 0
    actual: float  # measured
    stderr: float  # of `actual`, from the paired per-sample differences
    allowance: float  # what it may spend beyond its prediction: budget share, pace
    top1_drop: float  # acceptance top-1 before minus after (points)
    deferrals_in_row: int  # failed smallest steps just before this one
    holds_deferred: bool  # it holds weights deferred earlier: nothing else was left to choose
    chosen: torch.Tensor = field(repr=False, compare=False)  # the weights it zeroed
    after: Metrics = field(repr=False, compare=False)  # per sample, for paired tests
    before: Metrics = field(repr=False, compare=False)

    @property
    def smallest(self) -> bool:
        return self.size <= self.min_size


@dataclass(frozen=True)
class Verdict:
    """What the rules decided of a step."""
    kept: bool = False  # on its merits
    descent: bool = False  # its loss measurably fell (logged, whatever else was decided)
    forced: bool = False  # taken though it failed, so that the run ends at its count
    deferred: torch.Tensor | None = field(default=None, repr=False, compare=False)  # weights set aside
    same_size: bool = False  # the rest of a rejected step is retried at its size

    @property
    def accepted(self) -> bool:
        return self.kept or self.forced


class Rule:
    """A part of the step control; every hook defaults to changing nothing."""

    def allowance(self, weights: int, swapping: bool, log: list[dict]) -> float:
        return 0.0

    def judge(self, o: Outcome, v: Verdict) -> Verdict:
        return v

    def set_aside(self, o: Outcome, v: Verdict, flat, stats) -> Verdict:
        return v

    def next_size(self, o: Outcome, v: Verdict, size: int) -> int:
        return size


class LossBudget(Rule):
    """Each step may spend its share of a budget, `fraction` of the dense acceptance loss shared out by
    step size over the count `target`: without it, steps of weights whose predicted change is ~0 are
    rejected by noise alone and the run crawls at the smallest size."""

    def __init__(self, fraction: float, target: int):
        self.fraction, self.target = fraction, target

    def allowance(self, weights, swapping, log):
        dense = log[0]  # read from the log, so a resumed run allows the same
        return self.fraction * dense.get("accept_objective", dense["accept_loss"]) * weights / self.target


class Pace(Rule):
    """A removal step may also cost what its weights cost at the pace of the last kept steps
    (step.pace: a step is too big where its cost grows faster than its size)."""

    def __init__(self, window: int = 3):
        self.window = window

    def allowance(self, weights, swapping, log):
        return 0.0 if swapping else step.pace(log, self.window) * weights


class KeepDescents(Rule):
    """A step whose loss measurably fell is kept however much more was predicted; with `keeps_top1`,
    only if acceptance top-1 did not measurably fall (a loss can fall by flattening overconfident
    logits while top-1 falls: that is no descent)."""

    def __init__(self, keeps_top1: bool):
        self.keeps_top1 = keeps_top1

    def judge(self, o, v):
        descent = step.is_descent(o.actual, o.stderr) and not (self.keeps_top1 and step.top1_falls(o.after, o.before))
        return replace(v, kept=v.kept or descent, descent=descent)


class WithinPrediction(Rule):
    """A step is kept while its measured change stays within the prediction plus `tolerance` times
    the curvature part, twice the noise, and its allowance (step.as_predicted)."""

    def __init__(self, tolerance: float):
        self.tolerance = tolerance

    def judge(self, o, v):
        if v.kept:
            return v
        return replace(v, kept=step.as_predicted(o.actual, o.predicted, o.curvature, o.stderr, o.allowance,
                                                 self.tolerance))


class KeepHarmlessSmallest(Rule):
    """A failed smallest step is kept when it does no measurable harm: there is nothing smaller to try."""

    def judge(self, o, v):
        if v.kept or not o.smallest or step.hurts(o.actual, o.stderr, o.allowance):
            return v
        return replace(v, kept=True)


class Top1Guard(Rule):
    """No step may lose more than `max_drop` points of acceptance top-1, however its loss went."""

    def __init__(self, max_drop: float):
        self.max_drop = max_drop

    def judge(self, o, v):
        return replace(v, kept=False) if o.top1_drop > self.max_drop else v


class Deferral(Rule):
    """At the smallest size a failed step says its weights are mispredicted, not that it was too big:
    they are deferred (ranked last from now on) and the next ones tried; after `limit` such failures
    in a row a smallest step is taken regardless, so that the run ends at its count.

    `selective` (the default control): when a few weights (at most 5% of the step) carried a failed
    step's whole prediction, only they are deferred and the rest retried at this size, at any size
    (halving would keep them: they rank first); and a smallest step that already holds deferred
    weights is taken, since deferring more changes no later choice (the end of a run, a pattern's last
    room)."""

    SUSPECTS_SHARE = 0.05

    def __init__(self, limit: int, selective: bool):
        self.limit, self.selective = limit, selective

    def judge(self, o, v):
        stuck = o.deferrals_in_row >= self.limit or (self.selective and o.holds_deferred)
        return replace(v, forced=True) if o.smallest and stuck and not v.kept else v

    def set_aside(self, o, v, flat, stats):
        if self.selective and not o.holds_deferred and o.deferrals_in_row < self.limit:
            suspects = step.dominant(flat, stats, o.chosen)
            if 0 < len(suspects) <= self.SUSPECTS_SHARE * o.weights:
                return replace(v, deferred=suspects, same_size=True)
        return replace(v, deferred=o.chosen) if o.smallest else v


class RatioSizing(Rule):
    """Grow by `grow` while the measured change keeps up with the predicted one (their ratio at least
    `hold`), keep the size where the ratio breaks away, shrink by `shrink` after a rejected step. A
    predicted gain inside the measurement's noise says nothing of the ratio: such a step grows.

    With `tolerance`, the excess (the measured change beyond the prediction, `tolerance` times its
    curvature part and the allowance, all of which grow with the step's size, while the noise allowance
    2*stderr grows with its square root) estimates the size where the two would meet,
    r = (2*stderr / excess)^2 of this one: a rejected step shrinks there at once instead of halving
    through a cascade of rejections. (Capping growth by the same estimate cut rejections further, 43% ->
    33% on the demo, but took 36% more accepted steps, each a statistics pass: the expensive part on a
    large network.)

    With `headroom`, a kept step whose ratio broke away still grows toward that size while it lies
    beyond this one: a prediction that is optimistic by a steady amount (late in a run, inside a
    pattern's last room) otherwise holds the size at its smallest for hundreds of steps."""

    def __init__(self, grow: float, shrink: float, hold: float, headroom: bool = False,
                 tolerance: float | None = None):
        self.grow, self.shrink, self.hold, self.headroom, self.tolerance = grow, shrink, hold, headroom, tolerance

    def excess(self, o: Outcome) -> float | None:
        if self.tolerance is None:
            return None
        return step.excess_of(o.actual, o.predicted, o.curvature, o.allowance, self.tolerance)

    def next_size(self, o, v, size):
        excess = self.excess(o)
        fit = None
        if excess is not None and excess > 0 and o.stderr > 0:
            fit = 0.8 * (2 * o.stderr / excess) ** 2  # with a margin: the estimate is of the very edge
        if not v.accepted:
            return max(o.min_size, int(size * (self.shrink if fit is None else min(self.shrink, fit))))
        p = o.predicted
        ratio_holds = p is None or p >= -2 * o.stderr or o.actual / p >= self.hold
        factor = self.grow if ratio_holds else 1.0
        if self.headroom and not ratio_holds and excess is not None:
            factor = self.grow if excess <= 0 or fit is None else min(self.grow, max(1.0, fit))
        return min(o.max_size, max(o.min_size, int(math.ceil(size * factor))))


def prediction_only(s, budget_target: int, max_deferrals: int) -> list[Rule]:
    """The first version's control (--no-keep-descents): kept only as predicted, every kept step grows
    the next (a hold of -inf), a failed smallest step defers all its weights."""
    return [*_allowances(s, budget_target), WithinPrediction(s.tolerance), *_guard(s),
            Deferral(max_deferrals, selective=False), RatioSizing(s.grow, s.shrink, hold=-math.inf)]


def measured_descents(s, budget_target: int, max_deferrals: int) -> list[Rule]:
    """The default control: measured descents kept, sizes from the measured/predicted ratio."""
    return [*_allowances(s, budget_target), KeepDescents(s.descent_keeps_top1), WithinPrediction(s.tolerance),
            KeepHarmlessSmallest(), *_guard(s), Deferral(max_deferrals, selective=True),
            RatioSizing(s.grow, s.shrink, s.ratio_hold, s.headroom, s.tolerance)]


def _allowances(s, budget_target: int) -> list[Rule]:
    return [LossBudget(s.loss_budget, budget_target), *([Pace()] if s.pace else [])]


def _guard(s) -> list[Rule]:
    return [] if s.max_top1_drop is None else [Top1Guard(s.max_top1_drop)]


def rules_for(s, budget_target: int, max_deferrals: int) -> list[Rule]:
    """The rules the settings ask for, in the order the loop asks them. `budget_target`: the count the
    loss budget is shared over; `max_deferrals`: failed smallest steps in a row before one is forced."""
    return (measured_descents if s.keep_descents else prediction_only)(s, budget_target, max_deferrals)
