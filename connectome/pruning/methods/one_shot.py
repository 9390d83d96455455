"""The `one-shot` method: rank every prunable weight once by its score on the dense model's statistics
and cut at each count of the curve. The masks are nested by construction (each count zeroes the lowest
scores of the one ranking), a run takes one statistics pass and an evaluation per count, and weights of
unknown statistics rank last, as the greedy loop ranks them. This is the classic baseline (global
magnitude, Wanda, OBD with a Fisher diagonal) with a run folder, `verify` and `weights publish`.

The state file holds the mask of the last recorded count and the log: a resumed run recomputes the
ranking (the same statistics of the same dense model) and goes on from the next count.
"""

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from connectome.distributed import is_main
from connectome.pruning import scores, step
from connectome.pruning.methods.base import LoopStateRun, schedule
from connectome.pruning.registry import METHODS
from connectome.pruning.setup import Runtime, Setup
from connectome.pruning.state import FILE, LoopState
from connectome.pruning.statistics import collect


def pass_needed(ranking, unknown_last: bool) -> tuple[bool, bool]:
    """(a statistics pass is needed, it measures input norms) for scores that rank together: the norms
    also tell a weight with no input (free) from one behind a saturated unit (unknown), for scores that
    rank by gradients."""
    norms = any(c.needs_input_norms for c in ranking) or (unknown_last and any(c.needs_statistics for c in ranking))
    return any(c.needs_statistics for c in ranking) or norms, norms


def statistics(setup: Setup, runtime: Runtime, norms: bool):
    """One pass over the decision split on the model as it is (the dense model)."""
    s = setup.settings
    return collect(setup.loaded.module, setup.flat.params, setup.decision, s.batch_size, setup.device,
                   s.label_smoothing, runtime.autocast_dtype, runtime.progress,
                   workers=runtime.workers_for(setup.decision), channels_last=runtime.channels_last,
                   input_norms=norms)


def order(setup: Setup, score, stats, seed: int) -> torch.Tensor:
    """The prunable weights in the order they are zeroed: every prefix is a count's mask (with an N:M
    pattern, every prefix keeps each group within it)."""
    flat = setup.flat
    ranked = step.ranked_scores(flat, score, stats, torch.Generator().manual_seed(seed), setup.settings.unknown_last)
    if setup.pattern is None:
        return torch.argsort(ranked.masked_fill(~flat.eligible, math.inf), stable=True)
    return setup.pattern.lowest(ranked, flat, flat.eligible)


def cut(flat, ordered: torch.Tensor, k: int) -> None:
    """The mask of count k: the first k of the order zeroed, every other weight at its base value."""
    flat.mask.fill_(True)
    flat.mask[ordered[:k]] = False
    flat.write()


@METHODS.register
class OneShot(LoopStateRun):
    """A one-shot run in a folder. `counts`: the curve (default: `learn_points` even steps up to the target)."""

    name = "one-shot"
    settings = ("learn_points", "unknown_last")
    ranks = True
    KIND = "one-shot/1"  # the state file's kind: a greedy state that continues this run (its restore cycles) has none
    iterative = False  # compare shares one statistics pass among every one-shot score

    def __init__(self, setup: Setup, out: Path, resume: bool = False, runtime: Runtime | None = None,
                 on_step=None, counts: list[int] | None = None):
        super().__init__(setup, out, runtime, on_step)
        self.counts = list(counts) if counts else schedule(setup.target, self.s.learn_points)
        self.score = scores.of(self.s)
        self.state = LoopState(size=0, target=self.counts[-1], prunable=self.prunable)
        self._open(resume)

    @classmethod
    def work(cls, s, decide, accept, evals, target, prunable):
        """One statistics pass, and a measurement at every count and the dense model."""
        points = min(s.learn_points, target) if target else s.learn_points
        return (decide + (points + 1) * (accept + evals),
                f"one pass of {decide:,} decision samples + {points + 1:,} measurements of {accept + evals:,}")

    def _save(self) -> None:
        self.state.save(self.out / FILE, self.flat.to_mask(), self.s, self.KIND)

    def run(self, target: int | None = None) -> list[dict]:
        """Record every count of the curve up to `target` (default: the last)."""
        st, flat = self.state, self.flat
        target = self.counts[-1] if target is None else target
        start = self._begin()
        if not st.log:
            flat.reset()
            self._record_dense(self._eval(self.setup.accept, "acceptance"), start)
        todo = [k for k in self.counts[st.step_index:] if k <= target]
        if not todo:
            return st.log
        flat.reset()  # the ranking is of the dense model, whatever count a resume starts from
        needed, norms = pass_needed([self.score], self.s.unknown_last)
        ordered = order(self.setup, self.score, statistics(self.setup, self.rt, norms) if needed else None, self.s.seed)
        prev = self.counts[st.step_index - 1] if st.step_index else 0
        for k in tqdm(todo, desc=self.s.label(), disable=not self.rt.progress or not is_main()):
            cut(flat, ordered, k)
            acc, ev = self._eval(self.setup.accept, "acceptance"), self._eval(self.setup.evaluation, "evaluation")
            st.step_index += 1
            self._record({"step": st.step_index, "phase": "one-shot", "accepted": True, "removed": flat.removed(),
                          "restored": 0, "size": k - prev, **acc.as_dict("accept_"), **ev.as_dict("eval_")}, start)
            prev = k
        return st.log
