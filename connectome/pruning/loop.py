"""The pruning loop: zero weights in adaptive steps, optionally swap zeroed weights back, never
change a surviving weight.

Each step: collect gradient statistics on the decision split, zero the `size` weights with the lowest
scores, and compare the loss change measured on the held-out acceptance split with the change the
quadratic model predicted (connectome.pruning.step). A step that does much worse than predicted
(interactions within the step, curvature that a diagonal misses) is undone and retried at half the
size on the same statistics; a step that agrees lets the next one grow. The evaluation split is only
ever reported.

The loop state (connectome.pruning.state) is written atomically after every step, so a run killed at
any moment resumes to the same mask: the statistics depend only on the mask and the fixed data order.
"""

import json
import math
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from connectome.distributed import barrier, is_main
from connectome.errors import ConnectomeError
from connectome.evaluate import Metrics, evaluate
from connectome.io import write_text
from connectome.pruning import criteria, step
from connectome.pruning.setup import Runtime, Setup
from connectome.pruning.state import FILE, LoopState
from connectome.pruning.statistics import collect

MAX_DEFERRALS = 10  # failed smallest steps in a row before one is taken regardless


class Run:
    """One pruning run in a folder; `resume` continues from its last saved step. `budget_target`: the
    count the loss budget is shared over (compare stops at several counts on the way to it). `start`:
    a finished learned-mask run (connectome.pruning.learned.Learner) in the same folder, whose mask,
    log and time this run continues from: its restore cycles swap from the learned mask."""

    def __init__(self, setup: Setup, out: Path, resume: bool = False, runtime: Runtime | None = None,
                 on_step=None, budget_target: int | None = None, start=None):
        self.setup, self.s, self.out = setup, setup.settings, Path(out)
        self.rt = runtime or Runtime(device=setup.device)
        self.on_step = on_step
        module = setup.loaded.module
        if self.rt.channels_last:  # in place: the Parameters that FlatWeights rewrites stay the same objects
            module.to(memory_format=torch.channels_last)
        # A compiled wrapper shares the module's Parameters; FlatWeights.write changes their values in
        # place, which the compiled code reads as inputs (no weights are frozen into it).
        compile_ = self.rt.compile
        self.module = torch.compile(module, **({} if compile_ is True else {"backend": compile_})) if compile_ else module
        # A learned mask has no per-weight score: its swaps delete by the default greedy criterion.
        name = "connectome" if self.s.criterion == "learned" else self.s.criterion
        self.criterion = criteria.get(name, z=self.s.confidence)
        self.budget_target = budget_target or setup.target
        self.flat = setup.flat
        self.prunable = self.flat.prunable()
        self.state = LoopState(size=self._steps(self.s.step), target=setup.target, prunable=self.prunable)
        self.before: Metrics | None = None  # acceptance metrics of the current mask, per sample
        state_file = self.out / FILE
        barrier()  # under torchrun, rank 0 holds the folder's lock by now: every rank reads the state it will continue
        if start is not None:  # the learned mask at its target (its state file is replaced at the first step)
            self.flat.load_mask(start.flat.to_mask())
            self.flat.write()
            self.state.log, self.state.elapsed = list(start.log), start.elapsed
        elif state_file.exists():
            if not resume:
                raise ConnectomeError(f"{self.out} already holds a run: pass --resume to continue it, or choose another --out")
            self.state, mask = LoopState.load(state_file, self.s)
            self.flat.load_mask(mask)
            self.flat.write()
        elif resume and self.out.exists() and any(not p.name.startswith(".") and p.name not in ("settings.json", "job.json")
                                                  for p in self.out.iterdir()):
            raise ConnectomeError(f"{self.out} holds no resumable run state")

    @property
    def log(self) -> list[dict]:
        return self.state.log

    @property
    def elapsed(self) -> float:
        return self.state.elapsed

    def _steps(self, fraction: float) -> int:
        return max(1, int(round(fraction * self.prunable)))

    # --- measurements ---------------------------------------------------------------------------

    def _eval(self, dataset, desc, keep_per_sample=False) -> Metrics:
        rt = self.rt
        return evaluate(self.module, dataset, self.s.batch_size, self.setup.device,
                        progress=rt.progress, desc=desc, autocast_dtype=rt.autocast_dtype,
                        label_smoothing=self.s.label_smoothing, keep_per_sample=keep_per_sample,
                        workers=rt.workers_for(dataset), channels_last=rt.channels_last,
                        classes=self.setup.classes_of(dataset))

    def _stats(self):
        rt = self.rt
        # Input norms: for the criteria that rank by them, and to tell a weight whose input is always
        # zero (free) from one behind a saturated unit (unknown) when both show no gradient.
        norms = self.criterion.needs_input_norms or self.s.unknown_last
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
        start = time.time() - st.elapsed
        if is_main() and st.log:  # a resumed run: the readable log restarts from the state's
            write_text(self.out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in st.log))
        if self.before is None:  # a new run, or a resumed one: per-sample losses are not stored
            self.before = self._eval(self.setup.accept, "acceptance", keep_per_sample=True)
        if not st.log:  # the dense model: first point of the curve
            ev = self._eval(self.setup.evaluation, "evaluation")
            self._record({"step": 0, "phase": "dense", "accepted": True, "removed": 0, "restored": 0, "size": 0,
                          **self.before.as_dict("accept_"), **ev.as_dict("eval_")}, start)
        bar = tqdm(total=target, initial=self.flat.removed(), desc="removed", unit="w",
                   disable=not self.rt.progress or not is_main())
        while self.flat.removed() < target or st.cycles_done < self.s.restore_cycles:
            swapping = self.flat.removed() >= target
            stats = self._stats()  # every criterion's steps are predicted, and so accepted, from these
            while True:  # retry at smaller sizes on the same statistics: the model has not changed
                outcome = self._try_step(stats, target, swapping)
                if outcome["accepted"]:
                    break
                self._record(outcome, start)
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

    def _record(self, row: dict, start: float) -> None:
        st = self.state
        st.elapsed = time.time() - start
        row = {**row, "seconds": round(st.elapsed, 2)}
        st.log.append(row)
        if is_main():  # every rank holds the same state; one writes it
            st.save(self.out / FILE, self.flat.to_mask(with_deferred=True), self.s)
            self._append_log(row)
        if self.on_step:
            self.on_step(row)

    def _append_log(self, row: dict) -> None:
        """log.jsonl grows as steps are taken, so a long run can be followed with `tail -f`; the state
        file stays the record a resume reads."""
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _try_step(self, stats, target: int, swapping: bool) -> dict:
        flat, s, st = self.flat, self.s, self.state
        min_size = min(self._steps(s.min_step), st.size)
        gen = torch.Generator().manual_seed(s.seed * 1_000_003 + st.step_index)
        if swapping:
            restored = step.choose_restores(flat, stats, max(1, int(round(s.restore_fraction * st.size))))
            flat.mask[restored] = True  # restore first, so the deletions are chosen among all survivors
            removed = step.choose_removals(flat, self.criterion, stats, len(restored), gen, s.unit_share,
                                           s.unknown_last, self.setup.pattern)
        else:
            restored = step.choose_restores(flat, stats, 0)
            removed = step.choose_removals(flat, self.criterion, stats, min(st.size, target - flat.removed()), gen,
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
        descent = s.keep_descents and step.is_descent(actual, stderr) and not (
            s.descent_keeps_top1 and step.top1_falls(after, self.before))
        ok = descent or step.as_predicted(actual, prediction, curvature, stderr, budget, s.tolerance)
        smallest = st.size <= min_size
        # The sizes where measured and predicted change part ways are estimated from this step (new rule only).
        excess = step.excess_of(actual, prediction, curvature, budget, s.tolerance) if s.keep_descents else None
        if not ok and smallest and s.keep_descents and not step.hurts(actual, stderr, budget):
            ok = True  # nothing smaller to try, and it does no measurable harm
        if s.max_top1_drop is not None and self.before.top1 - after.top1 > s.max_top1_drop:
            ok = False
        # At the smallest size a step that measurably hurts says its weights are mispredicted, not that
        # it was too big: defer them (ranked last from now on) and try the next ones; only after
        # MAX_DEFERRALS failures in a row is a step taken regardless, so that the run ends at its count.
        # A step that already holds deferred weights had nothing else to choose from (the end of a run, a
        # pattern's last room): deferring more changes no later choice, so it is not retried as is.
        exhausted = s.keep_descents and bool(flat.deferred[removed].any())
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
            st.size = step.next_size(st.size, True, actual, prediction, s.ratio_hold if s.keep_descents else -math.inf,
                                     s.grow, s.shrink, min_size, self._steps(s.max_step), stderr, excess,
                                     s.headroom)
        else:
            flat.mask[removed] = True
            flat.mask[restored] = False
            flat.write()
            suspects = step.dominant(flat, stats, removed) if s.keep_descents else removed[:0]
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
                st.size = step.next_size(st.size, False, actual, prediction, s.ratio_hold, s.grow, s.shrink,
                                         min_size, self._steps(s.max_step), stderr, excess)
        row["removed"] = flat.removed()
        return row
