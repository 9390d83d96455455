"""Step control: the rules the greedy method judges and sizes its steps by, as objects it is given.

Both rules share the core test (connectome.pruning.step.as_predicted: the measured change within the
prediction plus its allowances) and grow after a kept step, shrink after a rejected one. They differ in
what else counts:

- `FirstRule`, the first version's: nothing else. A step is kept only as predicted, every kept step
  grows the next one, and a smallest step that fails has all its weights deferred.
- `MeasuredRule`, the default (`--keep-descents`): a step whose loss measurably fell is kept however
  much more was predicted (a descent); sizes follow the measured/predicted ratio and the size where the
  two would part; a harmless smallest step is kept; a failed step's few dominant weights are deferred
  rather than all of them.
"""

import math

from connectome.pruning import step


class FirstRule:
    """The first version's rule (--no-keep-descents)."""

    def __init__(self, s):
        self.s = s

    def descent(self, actual: float, stderr: float, after, before) -> bool:
        """A step kept for lowering the loss, whatever was predicted."""
        return False

    def excess(self, actual: float, prediction, curvature, budget: float) -> float | None:
        """How far the measured change went past the allowances that scale with the size (None: unused)."""
        return None

    def harmless(self, actual: float, stderr: float, budget: float) -> bool:
        """A failed smallest step that is kept anyway: nothing smaller to try, and no measurable harm."""
        return False

    def exhausted(self, flat, removed) -> bool:
        """The step already holds deferred weights: deferring more changes no later choice."""
        return False

    def suspects(self, flat, stats, removed):
        """The weights of a failed step to defer and retry without (none: the step is retried smaller)."""
        return removed[:0]

    def hold(self) -> float:
        """The measured/predicted ratio below which a kept step does not grow the next one."""
        return -math.inf

    def next_size(self, size: int, accepted: bool, actual: float, prediction, stderr: float, excess,
                  smallest: int, largest: int) -> int:
        s = self.s
        return step.next_size(size, accepted, actual, prediction, hold=self.hold() if accepted else s.ratio_hold,
                              grow=s.grow, shrink=s.shrink, smallest=smallest, largest=largest, stderr=stderr,
                              excess=excess, headroom=s.headroom if accepted else False)


class MeasuredRule(FirstRule):
    """The default rule: measured descents kept, sizes from the measured/predicted ratio."""

    def descent(self, actual, stderr, after, before):
        # A loss can fall by flattening overconfident logits while top-1 falls: that is no descent.
        return step.is_descent(actual, stderr) and not (self.s.descent_keeps_top1 and step.top1_falls(after, before))

    def excess(self, actual, prediction, curvature, budget):
        return step.excess_of(actual, prediction, curvature, budget, self.s.tolerance)

    def harmless(self, actual, stderr, budget):
        return not step.hurts(actual, stderr, budget)

    def exhausted(self, flat, removed):
        return bool(flat.deferred[removed].any())

    def suspects(self, flat, stats, removed):
        return step.dominant(flat, stats, removed)

    def hold(self):
        return self.s.ratio_hold


def rule_for(s) -> FirstRule:
    """The rule the settings ask for."""
    return MeasuredRule(s) if s.keep_descents else FirstRule(s)
