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
from connectome.pruning.control import Outcome, Rule, Verdict, rules_for
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
    that method's mask. `rules`: the step control, asked in order (connectome.pruning.control; default:
    the rules the settings ask for)."""

    name = "greedy"
    settings = ("step", "max_step", "min_step", "grow", "shrink", "tolerance", "loss_budget", "max_top1_drop",
                "keep_descents", "descent_keeps_top1", "ratio_hold", "headroom", "pace", "unit_share",
                "unknown_last", "restore_fraction")
    ranks = restores = True
    unit = "steps"

    def __init__(self, setup: Setup, out, resume: bool = False, runtime: Runtime | None = None,
                 on_step=None, budget_target: int | None = None, start=None, rules: list[Rule] | None = None):
        super().__init__(setup, out, runtime, on_step)
        self.budget_target = budget_target or setup.target
        self.rules = rules_for(self.s, self.budget_target, MAX_DEFERRALS) if rules is None else rules
        # A compiled wrapper shares the module's Parameters; FlatWeights.write changes their values in
        # place, which the compiled code reads as inputs (no weights are frozen into it).
        compile_ = self.rt.compile
        if compile_:
            self.module = torch.compile(self.module, **({} if compile_ is True else {"backend": compile_}))
        self.score = scores.of(self.s)
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
        """One step: propose it, measure it on the acceptance split, and keep or undo it as the rules
        (connectome.pruning.control) decide. Returns its log row."""
        flat, st = self.flat, self.state
        chosen, restored = self._propose(stats, target, swapping)
        o = self._outcome(stats, chosen, restored, swapping)
        v = Verdict()
        for rule in self.rules:  # each sees the verdict so far: a later rule has the last word (a veto)
            v = rule.judge(o, v)
        row = {"stderr": o.stderr, "step": st.step_index + 1, "phase": "swap" if swapping else "remove",
               "accepted": v.accepted, "forced": v.forced, "descent": v.descent, "size": o.weights,
               "restored": len(restored), "predicted": o.predicted, "actual": o.actual,
               "calib_loss": stats.loss if stats else None, "calib_top1": stats.top1 if stats else None,
               **o.after.as_dict("accept_")}
        st.step_index += 1
        if v.accepted:
            st.deferrals_in_row = 0
            self.before = o.after
        else:  # undone: the next try starts from the mask the statistics were collected on
            flat.mask[chosen] = True
            flat.mask[restored] = False
            flat.write()
            for rule in self.rules:
                v = rule.set_aside(o, v, flat, stats)
            if v.deferred is not None:
                flat.deferred[v.deferred] = True
                st.deferrals_in_row += 1
                row["deferred"] = len(v.deferred)
        if not v.same_size:  # the same size when a few set-aside weights carried the failure
            size = st.size
            for rule in self.rules:
                size = rule.next_size(o, v, size)
            st.size = size
        row["removed"] = flat.removed()
        return row

    def _propose(self, stats, target: int, swapping: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero the step's weights in the mask and the module (a swap restores others first, so the
        deletions are chosen among all survivors); the indices zeroed and restored."""
        flat, s, st = self.flat, self.s, self.state
        gen = torch.Generator().manual_seed(s.seed * 1_000_003 + st.step_index)
        if swapping:
            restored = step.choose_restores(flat, stats, max(1, int(round(s.restore_fraction * st.size))))
            flat.mask[restored] = True
            k = len(restored)  # as many deleted as restored: the count stays on budget
        else:
            restored = step.choose_restores(flat, stats, 0)
            k = min(st.size, target - flat.removed())
        chosen = step.choose_removals(flat, self.score, stats, k, gen, s.unit_share, s.unknown_last,
                                      self.setup.pattern)
        flat.mask[chosen] = False
        flat.write()
        return chosen, restored

    def _outcome(self, stats, chosen, restored, swapping: bool) -> Outcome:
        """The step as measured, with what the rules allow it to spend beyond its prediction."""
        st = self.state
        prediction, curvature = step.predicted(self.flat, stats, chosen, restored)
        after = self._eval(self.setup.accept, "acceptance", keep_per_sample=True)
        return Outcome(size=st.size, min_size=min(self._steps(self.s.min_step), st.size),
                       max_size=self._steps(self.s.max_step), weights=len(chosen), swapping=swapping,
                       predicted=prediction, curvature=curvature,
                       actual=self._objective(after) - self._objective(self.before),
                       stderr=step.paired_stderr(after, self.before),
                       allowance=sum(rule.allowance(len(chosen), swapping, st.log) for rule in self.rules),
                       top1_drop=self.before.top1 - after.top1, deferrals_in_row=st.deferrals_in_row,
                       holds_deferred=bool(self.flat.deferred[chosen].any()), chosen=chosen, after=after,
                       before=self.before)
