"""What every method shares: a run in a folder, and the schedule of a curve's counts.

A method maps (model, data, mask) to new masks and records each as a row of the run's log, the dense
model first. `RunFolder` owns what does not depend on how masks are searched: the resume checks, the
evaluation passes, the dense row, the log (in the state file for a resume, and in log.jsonl as it
grows) and the state file's settings digest. A method writes its own state (`_save`) and reads it back
(`_load`). The folder's lock belongs to the caller (connectome.pruning.api): compare runs each method
in a subfolder of a folder it has already claimed.
"""

import json
import os
import time
from pathlib import Path
from typing import ClassVar

import torch

from connectome.distributed import barrier, is_main
from connectome.errors import ConnectomeError
from connectome.evaluate import Metrics, evaluate
from connectome.io import open_nofollow, write_text
from connectome.pruning.setup import Runtime, Setup
from connectome.pruning.state import FILE, LoopState


def schedule(target: int, points: int) -> list[int]:
    """The counts of a curve: `points` even steps up to the target (compare's grid)."""
    return sorted({max(1, round(target * i / points)) for i in range(1, points + 1)}) if target else [0]


class RunFolder:
    """One method's run in a folder; `resume` continues from its saved state. Subclasses set `name`,
    hold `log` and `elapsed` in their state, and define `run`, `_save` and `_load`. `iterative`:
    compare runs the method in a folder per seed, stopping at each count of its grid; otherwise
    compare ranks once per score and evaluates each count itself (connectome.pruning.compare).

    What a method reads of the settings, beyond the common ones, it declares: `settings`, their names;
    `ranks`, it ranks weights by --score (whose own settings then decide its runs too); `restores`, it
    runs the delete-and-restore cycles that follow any method's mask. A run's digest holds these and
    no other method's (connectome.pruning.settings). `unit`: what its log rows are, for the summary."""

    name: ClassVar[str]
    settings: ClassVar[tuple[str, ...]] = ()
    ranks: ClassVar[bool] = False
    restores: ClassVar[bool] = False
    unit: ClassVar[str] = "counts"
    iterative: ClassVar[bool] = True
    log: list[dict]

    def __init__(self, setup: Setup, out: Path, runtime: Runtime | None = None, on_step=None):
        self.setup, self.s, self.out = setup, setup.settings, Path(out)
        self.rt = runtime or Runtime(device=setup.device)
        self.on_step = on_step
        self.flat = setup.flat
        self.prunable = self.flat.prunable()
        self.module = setup.loaded.module
        if self.rt.channels_last:  # in place: the Parameters that FlatWeights rewrites stay the same objects
            self.module.to(memory_format=torch.channels_last)

    def _open(self, resume: bool) -> None:
        """Read the folder's state where there is one (a resume), or check that there is nothing to resume."""
        state_file = self.out / FILE
        barrier()  # under torchrun, rank 0 holds the folder's lock by now: every rank reads the state it will continue
        if state_file.exists():
            if not resume:
                raise ConnectomeError(f"{self.out} already holds a run: pass --resume to continue it, or choose another --out")
            self._load(state_file)
        elif resume and self.out.exists() and any(not p.name.startswith(".") and p.name not in ("settings.json", "job.json")
                                                  for p in self.out.iterdir()):
            raise ConnectomeError(f"{self.out} holds no resumable run state")

    @property
    def elapsed(self) -> float:
        raise NotImplementedError

    @elapsed.setter
    def elapsed(self, seconds: float) -> None:
        raise NotImplementedError

    def run(self, target: int | None = None) -> list[dict]:
        raise NotImplementedError

    @classmethod
    def work(cls, s, decide: int, accept: int, evals: int, target: int | None,
             prunable: int | None) -> tuple[float, str]:
        """(images through the model at least, how they add up) for settings `s`, with the calibration
        split's sizes and the evaluation split's (0 where unknown): what a server checks before it
        takes a job (connectome.serve.work)."""
        raise NotImplementedError

    @classmethod
    def for_grid(cls, setup: Setup, folder: Path, counts: list[int], runtime: Runtime) -> "RunFolder":
        """The run compare stops at each of `counts` (increasing) to evaluate, resuming what `folder`
        holds (an iterative method's; compare evaluates the others' counts itself)."""
        raise NotImplementedError

    def _save(self) -> None:
        raise NotImplementedError

    def _load(self, path: Path) -> None:
        raise NotImplementedError

    # --- measurements -----------------------------------------------------------------------------

    def _eval(self, dataset, desc: str, keep_per_sample: bool = False) -> Metrics:
        rt = self.rt
        return evaluate(self.module, dataset, self.s.batch_size, self.setup.device,
                        progress=rt.progress, desc=desc, autocast_dtype=rt.autocast_dtype,
                        label_smoothing=self.s.label_smoothing, keep_per_sample=keep_per_sample,
                        workers=rt.workers_for(dataset), channels_last=rt.channels_last,
                        classes=self.setup.classes_of(dataset))

    # --- the log ----------------------------------------------------------------------------------

    def _begin(self) -> float:
        """The start time of this stretch of work; a resumed run's readable log restarts from its state."""
        if is_main() and self.log:
            write_text(self.out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in self.log))
        return time.time() - self.elapsed

    def _record_dense(self, accept: Metrics, start: float) -> None:
        """The dense model: the first point of every curve."""
        ev = self._eval(self.setup.evaluation, "evaluation")
        self._record({"step": 0, "phase": "dense", "accepted": True, "removed": 0, "restored": 0, "size": 0,
                      **accept.as_dict("accept_"), **ev.as_dict("eval_")}, start)

    def _record(self, row: dict, start: float) -> None:
        self.elapsed = time.time() - start
        row = {**row, "seconds": round(self.elapsed, 2)}
        self.log.append(row)
        if is_main():  # every rank holds the same state; one writes it
            self._save()
            # log.jsonl grows as rows are recorded, so a long run can be followed with `tail -f`; the
            # state file stays the record a resume reads.
            fd = open_nofollow(self.out / "log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with os.fdopen(fd, "a") as f:  # never through a link planted in the folder
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if self.on_step:
            self.on_step(row)


class LoopStateRun(RunFolder):
    """A run whose state is a `LoopState` (the record watchers read, and the mask): greedy and one-shot."""

    state: LoopState

    @property
    def log(self) -> list[dict]:
        return self.state.log

    @property
    def elapsed(self) -> float:
        return self.state.elapsed

    @elapsed.setter
    def elapsed(self, seconds: float) -> None:
        self.state.elapsed = seconds

    def _load(self, path: Path) -> None:
        self.state, mask = LoopState.load(path, self.s)
        self.flat.load_mask(mask)
        self.flat.write()
