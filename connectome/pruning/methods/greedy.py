"""The `greedy` method, the connectome loop: zero weights in adaptive steps, optionally swap zeroed
weights back, never change a surviving weight.

Each step: collect gradient statistics on the decision split, zero the `size` weights with the lowest
scores (by --score), and compare the loss change measured on the held-out acceptance split with the change the
quadratic model predicted (connectome.pruning.step). A step that does much worse than predicted
(interactions within the step, curvature that a diagonal misses) is undone and retried at half the
size on the same statistics; a step that agrees lets the next one grow. The evaluation split is only
ever reported.

The loop state (connectome.pruning.state) is written atomically after every step, so a run killed at
any moment resumes to the same mask: the statistics depend only on the mask and the fixed data order.
"""

import math
from dataclasses import replace

import torch
from tqdm.auto import tqdm

from connectome.distributed import barrier, is_main
from connectome.errors import ConnectomeError
from connectome.evaluate import Metrics
from connectome.pruning import scores, step
from connectome.pruning.control import FirstRule, rule_for
from connectome.pruning.methods.base import LoopStateRun
from connectome.pruning.registry import METHODS
from connectome.pruning.setup import Runtime, Setup
from connectome.pruning.state import FILE, LoopState
from connectome.pruning.statistics import collect

MAX_DEFERRALS = 10  # failed smallest steps in a row before one is taken regardless


@METHODS.register
class Greedy(LoopStateRun):
    """The loop in a folder. `budget_target`: the count the loss budget is shared over (compare stops at
    several counts on the way to it). `start`: a finished learned run (connectome.pruning.methods.learned)
    in the same folder, whose mask, log and time this run continues from: its restore cycles swap from
    that method's mask. `rule`: the step control (default: the one the settings ask for)."""

    name = "greedy"
    settings = ("step", "max_step", "min_step", "grow", "shrink", "tolerance", "loss_budget", "max_top1_drop",
                "keep_descents", "descent_keeps_top1", "ratio_hold", "headroom", "pace", "unit_share",
                "unknown_last", "restore_fraction")
    ranks = restores = True
    unit = "steps"

    def __init__(self, setup: Setup, out, resume: bool = False, runtime: Runtime | None = None,
                 on_step=None, budget_target: int | None = None, start=None, rule: FirstRule | None = None):
        super().__init__(setup, out, runtime, on_step)
        self.rule = rule or rule_for(self.s)  # how steps are judged and sized (connectome.pruning.control)
        # A compiled wrapper shares the module's Parameters; FlatWeights.write changes their values in
        # place, which the compiled code reads as inputs (no weights are frozen into it).
        compile_ = self.rt.compile
        if compile_:
            self.module = torch.compile(self.module, **({} if compile_ is True else {"backend": compile_}))
        self.score = scores.of(self.s)
        self.budget_target = budget_target or setup.target
        self.state = LoopState(size=self._steps(self.s.step), target=setup.target, prunable=self.prunable)
        self.before: Metrics | None = None  # acceptance metrics of the current mask, per sample
        if start is None:
            self._open(resume)
        else:  # the other method's mask at its target (its state file is replaced at the first step)
            barrier()
            self.flat.load_mask(start.flat.to_mask())
            self.flat.write()
            self.state.log, self.state.elapsed = list(start.log), start.elapsed

    @classmethod
    def for_grid(cls, setup, folder, counts, runtime):
        """Stopped at each count on the way, its loss budget shared over the last."""
        return cls(replace(setup, target=counts[0]), folder, resume=True, runtime=runtime, budget_target=counts[-1])

    @classmethod
    def work(cls, s, decide, accept, evals, target, prunable):
        """At least the steps the count needs at the largest step size."""
        removing = math.ceil(target / max(1.0, s.max_step * prunable)) if target and prunable else 1
        return (removing * (decide + accept) + evals * removing / s.eval_every,
                f"{removing:,} at max_step {s.max_step:g} steps of {decide + accept:,}")

    def _save(self) -> None:
        self.state.save(self.out / FILE, self.flat.to_mask(with_deferred=True), self.s)

    def _steps(self, fraction: float) -> int:
        return max(1, int(round(fraction * self.prunable)))

    # --- measurements ---------------------------------------------------------------------------

    def _stats(self):
        rt = self.rt
        # Input norms: for the criteria that rank by them, and to tell a weight whose input is always
        # zero (free) from one behind a saturated unit (unknown) when both show no gradient.
        norms = self.score.needs_input_norms or self.s.unknown_last
        return collect(self.module, self.flat.params, self.setup.decision, self.s.batch_size,
                       self.setup.device, self.s.label_smoothing, rt.autocast_dtype, rt.progress,
                       workers=rt.workers_for(self.setup.decision), channels_last=rt.channels_last,
                       input_norms=norms)

    @staticmethod
    def _objective(m: Metrics) -> float:
        """The loss the statistics differentiate: steps are predicted and accepted on it."""
        return m.objective if m.objective is not None else m.loss

    # --- the loop -------------------------------------------------------------------------------

    def run(self, target: int | None = None) -> list[dict]:
        """Remove weights until `target` (default: the setup's) are gone, then the restore cycles."""
        target = self.setup.target if target is None else target
        st = self.state
        start = self._begin()
        if self.before is None:  # a new run, or a resumed one: per-sample losses are not stored
            self.before = self._eval(self.setup.accept, "acceptance", keep_per_sample=True)
        if not st.log:
            self._record_dense(self.before, start)
        bar = tqdm(total=target, initial=self.flat.removed(), desc="removed", unit="w",
                   disable=not self.rt.progress or not is_main())
        while self.flat.removed() < target or st.cycles_done < self.s.restore_cycles:
            swapping = self.flat.removed() >= target
            removed = self.flat.removed()
            stats = self._stats()  # every score's steps are predicted, and so accepted, from these
            while True:  # retry at smaller sizes on the same statistics: the model has not changed
                outcome = self._try_step(stats, target, swapping)
                if outcome["accepted"]:
                    break
                self._record(outcome, start)
            if not swapping and self.flat.removed() <= removed:
                # An accepted removal step zeroes surviving weights; one that zeroed none (a score of NaN
                # or inf everywhere ranks the removed weights first) would repeat forever.
                raise ConnectomeError(f"the greedy loop stopped making progress at step {st.step_index} "
                                      f"({removed:,} of {target:,} removed): the {self.s.score} score ranks no "
                                      f"surviving weight; try another --score or its settings")
            if swapping:
                st.cycles_done += 1
            st.accepted_since_eval += 1
            # Evaluated every few steps, at the target (before any swap: the curve shows what the
            # restore cycles add) and at the end.
            reached = not swapping and self.flat.removed() >= target
            if st.accepted_since_eval >= self.s.eval_every or reached or (self.flat.removed() >= target and
                                                                          st.cycles_done >= self.s.restore_cycles):
                outcome.update(self._eval(self.setup.evaluation, "evaluation").as_dict("eval_"))
                st.accepted_since_eval = 0
            self._record(outcome, start)
            bar.n = self.flat.removed()
            bar.set_postfix(size=st.size, top1=f"{self.before.top1:.2f}", loss=f"{self.before.loss:.4f}")
            bar.refresh()
        bar.close()
        return st.log

    def _try_step(self, stats, target: int, swapping: bool) -> dict:
        flat, s, st = self.flat, self.s, self.state
        min_size = min(self._steps(s.min_step), st.size)
        gen = torch.Generator().manual_seed(s.seed * 1_000_003 + st.step_index)
        if swapping:
            restored = step.choose_restores(flat, stats, max(1, int(round(s.restore_fraction * st.size))))
            flat.mask[restored] = True  # restore first, so the deletions are chosen among all survivors
            removed = step.choose_removals(flat, self.score, stats, len(restored), gen, s.unit_share,
                                           s.unknown_last, self.setup.pattern)
        else:
            restored = step.choose_restores(flat, stats, 0)
            removed = step.choose_removals(flat, self.score, stats, min(st.size, target - flat.removed()), gen,
                                           s.unit_share, s.unknown_last, self.setup.pattern)
        flat.mask[removed] = False
        flat.write()
        prediction, curvature = step.predicted(flat, stats, removed, restored)
        after = self._eval(self.setup.accept, "acceptance", keep_per_sample=True)
        actual = self._objective(after) - self._objective(self.before)
        stderr = step.paired_stderr(after, self.before)
        # Each step may also spend its share of the run's budget: without it, steps of weights whose
        # predicted change is ~0 are rejected by noise alone and the run crawls at the minimum size.
        dense = st.log[0]  # the loss budget is a fraction of the dense model's acceptance loss
        budget = s.loss_budget * dense.get("accept_objective", dense["accept_loss"]) * len(removed) / self.budget_target
        if s.pace and not swapping:  # what this many weights cost at the pace of the last kept steps
            budget += step.pace(st.log) * len(removed)
        rule = self.rule
        descent = rule.descent(actual, stderr, after, self.before)
        ok = descent or step.as_predicted(actual, prediction, curvature, stderr, budget, s.tolerance)
        smallest = st.size <= min_size
        # The size where measured and predicted change part ways is estimated from this step.
        excess = rule.excess(actual, prediction, curvature, budget)
        if not ok and smallest and rule.harmless(actual, stderr, budget):
            ok = True  # nothing smaller to try, and it does no measurable harm
        if s.max_top1_drop is not None and self.before.top1 - after.top1 > s.max_top1_drop:
            ok = False
        # At the smallest size a step that measurably hurts says its weights are mispredicted, not that
        # it was too big: defer them (ranked last from now on) and try the next ones; only after
        # MAX_DEFERRALS failures in a row is a step taken regardless, so that the run ends at its count.
        # A step that already holds deferred weights had nothing else to choose from (the end of a run, a
        # pattern's last room): deferring more changes no later choice, so it is not retried as is.
        exhausted = rule.exhausted(flat, removed)
        forced = smallest and (st.deferrals_in_row >= MAX_DEFERRALS or exhausted) and not ok
        row = {"stderr": stderr, "step": st.step_index + 1, "phase": "swap" if swapping else "remove",
               "accepted": ok or forced, "forced": forced, "descent": descent, "size": len(removed),
               "restored": len(restored), "predicted": prediction, "actual": actual,
               "calib_loss": stats.loss if stats else None, "calib_top1": stats.top1 if stats else None,
               **after.as_dict("accept_")}
        st.step_index += 1
        if ok or forced:
            st.deferrals_in_row = 0
            self.before = after
            st.size = rule.next_size(st.size, True, actual, prediction, stderr, excess, min_size,
                                     self._steps(s.max_step))
        else:
            flat.mask[removed] = True
            flat.mask[restored] = False
            flat.write()
            suspects = rule.suspects(flat, stats, removed)
            if 0 < len(suspects) <= 0.05 * len(removed) and st.deferrals_in_row < MAX_DEFERRALS and not exhausted:
                # A few weights carried the failed prediction: defer them, retry the rest at this size.
                flat.deferred[suspects] = True
                st.deferrals_in_row += 1
                row["deferred"] = len(suspects)
            else:
                if smallest:
                    flat.deferred[removed] = True
                    st.deferrals_in_row += 1
                    row["deferred"] = len(removed)
                st.size = rule.next_size(st.size, False, actual, prediction, stderr, excess, min_size,
                                         self._steps(s.max_step))
        row["removed"] = flat.removed()
        return row
