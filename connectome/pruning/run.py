"""The pruning loop: zero weights in adaptive steps, optionally swap zeroed weights back, never
change a surviving weight.

Each step: collect gradient statistics on the decision split, zero the `size` weights with the lowest
scores, and compare the loss change measured on the held-out acceptance split with the change the
quadratic model predicted. A step that does much worse than predicted (interactions within the step,
curvature that a diagonal misses) is undone and retried at half the size on the same statistics;
a step that agrees lets the next one grow. The evaluation split is only ever reported.

All loop state (mask, step size, log) is written atomically after every step, so a run killed at any
moment resumes to the same mask: the statistics depend only on the mask and the fixed data order.
"""

import fnmatch
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from connectome.pruning import criteria
from connectome.io import read_metadata, save_state, write_text
from connectome.data.datasets import Splits, default_workers, load_dataset, subset
from connectome.distributed import all_reduce_, barrier, is_main
from connectome.errors import ConnectomeError
from connectome.evaluate import Metrics, evaluate
from connectome.pruning.mask import Mask
from connectome.models.load import LoadedModel, load_model, state_sha256
from connectome.sizes import parse_count
from connectome.pruning.statistics import collect

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MAX_DEFERRALS = 10  # failed smallest steps in a row before one is taken regardless


@dataclass
class PruneSettings:
    """Every hyperparameter of a run. Those marked (no effect) are off at their default."""
    model: str
    remove: str
    data: str | None = None  # default: the data the model was made for
    weights: str | None = None
    weights_file: str | None = None
    criterion: str = "connectome"
    confidence: float = 8.0  # z of the connectome criterion's confidence bound (chosen by measurement)
    include: list[str] = field(default_factory=list)  # glob patterns on parameter names (no effect)
    exclude: list[str] = field(default_factory=list)  # (no effect)
    calib_samples: int = 10000  # from the training split; the decision and acceptance splits
    accept_fraction: float = 0.2  # share of the calibration samples held out to accept steps
    eval_samples: int | None = None  # from the validation/test split; None = all
    batch_size: int = 128
    step: float = 0.01  # first step, as a fraction of the prunable weights
    max_step: float = 0.05  # largest step, same unit
    min_step: float = 0.0005  # smallest step, same unit; one that fails defers its weights
    grow: float = 1.5
    shrink: float = 0.5
    tolerance: float = 4.0  # accept while actual <= predicted + tolerance*sum(1/2*F*w^2) + 2*stderr(actual) + share of budget
    loss_budget: float = 0.1  # surprise the whole run may spend, as a fraction of the dense loss
    max_top1_drop: float | None = None  # also reject a step losing more acceptance top-1 (points) (no effect)
    label_smoothing: float = 0.0  # of the loss the statistics differentiate (the model's training loss)
    restore_cycles: int = 0  # swap steps after the target is reached (no effect)
    restore_fraction: float = 0.5  # share of a swap step's size that is restored
    eval_every: int = 5  # evaluate on the evaluation split every this many accepted steps
    seed: int = 0

    # Settings that change no decision, so resuming with other values is allowed.
    RUNTIME = ("eval_every",)

    def digest(self) -> str:
        d = {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


SETTING_NAMES = {f.name for f in fields(PruneSettings)}


def prunable_parameters(model: nn.Module, include=(), exclude=()) -> dict[str, nn.Parameter]:
    """Conv and linear weights by default (not biases, not norm layers), filtered by glob patterns."""
    out = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, PRUNABLE_TYPES) and mod.weight is not None:
            name = f"{mod_name}.weight" if mod_name else "weight"
            if include and not any(fnmatch.fnmatch(name, p) for p in include):
                continue
            if any(fnmatch.fnmatch(name, p) for p in exclude):
                continue
            out[name] = mod.weight
    return out


DEFERRED = "deferred:"


class FlatWeights:
    """The prunable weights as one flat vector, so a global top-k is a single call."""

    def __init__(self, params: dict[str, nn.Parameter]):
        self.params = params
        self.names = list(params)
        self.sizes = [p.numel() for p in params.values()]
        self.base = torch.cat([p.detach().reshape(-1) for p in params.values()]).clone()
        self.mask = torch.ones_like(self.base, dtype=torch.bool)
        self.eligible = self.base != 0  # weights already zero in the base are not candidates
        self.deferred = torch.zeros_like(self.mask)  # weights whose removal was measured far worse than predicted

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view_as(self.params[n]) for n, t in zip(self.names, flat.split(self.sizes))}

    def cat(self, per_param: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([per_param[n].reshape(-1) for n in self.names])

    @torch.no_grad()
    def write(self) -> None:
        for n, w0, m in zip(self.names, self.base.split(self.sizes), self.mask.split(self.sizes)):
            self.params[n].copy_((w0 * m).view_as(self.params[n]))

    def to_mask(self, with_deferred: bool = False) -> Mask:
        masks = {n: m.view_as(self.params[n]).cpu().clone() for n, m in self.split(self.mask).items()}
        if with_deferred:  # loop state only: the published mask never carries these
            masks.update({DEFERRED + n: d.view_as(self.params[n]).cpu().clone() for n, d in self.split(self.deferred).items()})
        return Mask(masks)

    def load_mask(self, mask: Mask) -> None:
        self.mask = torch.cat([mask[n].reshape(-1) for n in self.names]).to(self.base.device)
        if DEFERRED + self.names[0] in mask:
            self.deferred = torch.cat([mask[DEFERRED + n].reshape(-1) for n in self.names]).to(self.base.device)

    def removed(self) -> int:
        return int((~self.mask & self.eligible).sum())


@dataclass
class Setup:
    """What a run works on, resolved once from the settings."""
    settings: PruneSettings
    loaded: LoadedModel
    splits: Splits
    flat: FlatWeights
    target: int
    decision: object
    accept: object
    evaluation: object
    base_state: dict
    base_sha256: str
    device: str


def check_settings(s: PruneSettings) -> None:
    """The checks that need neither model nor data (the service runs them before it queues a job)."""
    if s.criterion not in criteria.REGISTRY:
        raise ConnectomeError(f"unknown criterion {s.criterion!r}: choose from {', '.join(criteria.REGISTRY)}")
    if not 0 < s.accept_fraction < 1:
        raise ConnectomeError("--accept-fraction must lie strictly between 0 and 1")
    if s.calib_samples is None or s.calib_samples < 4:
        raise ConnectomeError("--calib-samples must be at least 4: the statistics need calibration data")
    if not 0 < s.min_step <= s.step <= s.max_step <= 1:
        raise ConnectomeError("step sizes must satisfy 0 < min-step <= step <= max-step <= 1")
    parse_count(s.remove, 10**15)  # syntax only: a percentage or a count against the model comes later


def prepare(s: PruneSettings, device: str = "cpu") -> Setup:
    """Validate everything a run needs before anything is written."""
    check_settings(s)
    loaded = load_model(s.model, weights=s.weights, weights_file=s.weights_file)
    data = s.data or loaded.dataset
    if not data:
        raise ConnectomeError(f"--data is required for {s.model} (e.g. imagenet:/path/to/imagenet)")
    splits = load_dataset(data, loaded.transforms)
    n_accept = max(2, int(round(s.calib_samples * s.accept_fraction)))
    n_decide = s.calib_samples - n_accept
    if s.calib_samples > len(splits.train):
        raise ConnectomeError(f"--calib-samples {s.calib_samples:,} exceeds the {len(splits.train):,} training samples")
    if n_decide < 2 * s.batch_size and n_decide < 2:
        raise ConnectomeError("too few calibration samples for statistics")
    model = loaded.module.to(device).eval()
    params = prunable_parameters(model, s.include, s.exclude)
    if not params:
        raise ConnectomeError("no prunable parameters: check --include/--exclude patterns")
    flat = FlatWeights(params)
    target = parse_count(s.remove, int(flat.eligible.sum()))
    base_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return Setup(
        settings=s, loaded=loaded, splits=splits, flat=flat, target=target,
        decision=subset(splits.train, n_decide, s.seed),
        accept=subset(splits.train, n_accept, s.seed, skip=n_decide),
        evaluation=subset(splits.test, s.eval_samples, s.seed) if s.eval_samples else splits.test,
        base_state=base_state, base_sha256=state_sha256(base_state), device=device)


class Run:
    """One pruning run in a folder; `resume` continues from its last saved step."""

    def __init__(self, setup: Setup, out: Path, resume: bool = False, progress: bool = True,
                 autocast_dtype=None, on_step=None, channels_last: bool = False, compile: bool | str = False,
                 workers: int | None = None):
        """Runtime options, which change no decision: `autocast_dtype` (bf16 on GPU), `channels_last`,
        `compile` (True: torch.compile's default backend; a string names another), `workers` (DataLoader
        workers for image folders; None: data.default_workers)."""
        self.setup, self.s, self.out = setup, setup.settings, Path(out)
        self.progress, self.autocast_dtype, self.on_step = progress, autocast_dtype, on_step
        self.channels_last, self.workers = channels_last, workers
        module = setup.loaded.module
        if channels_last:  # in place: the Parameters that FlatWeights rewrites stay the same objects
            module.to(memory_format=torch.channels_last)
        # A compiled wrapper shares the module's Parameters; FlatWeights.write changes their values in
        # place, which the compiled code reads as inputs (no weights are frozen into it).
        self.module = torch.compile(module, **({} if compile is True else {"backend": compile})) if compile else module
        self.criterion = criteria.get(self.s.criterion, z=self.s.confidence)
        self.budget_target = setup.target  # the count the loss budget is shared over (compare stops earlier)
        self.flat = setup.flat
        self.prunable = int(self.flat.eligible.sum())
        self.log: list[dict] = []
        self.size = self._steps(self.s.step)
        self.step_index = 0
        self.cycles_done = 0
        self.deferrals_in_row = 0
        self.accepted_since_eval = 0
        self.before: Metrics | None = None
        self.elapsed = 0.0
        state_file = self.out / "state.safetensors"
        barrier()  # under torchrun, rank 0 holds the folder's lock by now: every rank reads the state it will continue
        if state_file.exists():
            if not resume:
                raise ConnectomeError(f"{self.out} already holds a run: pass --resume to continue it, or choose another --out")
            self._load_state(state_file)
        elif resume and self.out.exists() and any(not p.name.startswith(".") for p in self.out.iterdir()):
            raise ConnectomeError(f"{self.out} holds no resumable run state")

    def _steps(self, fraction: float) -> int:
        return max(1, int(round(fraction * self.prunable)))

    # --- state ----------------------------------------------------------------------------------

    def _save_state(self) -> None:
        meta = {"settings": json.dumps(asdict(self.s), sort_keys=True), "digest": self.s.digest(),
                "loop": json.dumps({"size": self.size, "step_index": self.step_index, "cycles_done": self.cycles_done,
                                    "deferrals_in_row": self.deferrals_in_row,
                                    "accepted_since_eval": self.accepted_since_eval, "elapsed": self.elapsed,
                                    "target": self.setup.target, "prunable": self.prunable}),  # for watchers
                "log": json.dumps(self.log)}
        self.flat.to_mask(with_deferred=True).save(self.out / "state.safetensors", meta)

    def _load_state(self, path: Path) -> None:
        meta = read_metadata(path)
        if meta.get("digest") != self.s.digest():
            stored = json.loads(meta.get("settings", "{}"))
            diff = sorted(k for k in SETTING_NAMES - set(PruneSettings.RUNTIME)
                          if stored.get(k) != asdict(self.s).get(k))
            raise ConnectomeError(f"{self.out} was started with other settings ({', '.join(diff) or 'unknown'}): "
                                  f"resume with the same settings or choose another --out")
        self.flat.load_mask(Mask.load(path))
        self.flat.write()
        loop = json.loads(meta["loop"])
        self.size, self.step_index, self.cycles_done = loop["size"], loop["step_index"], loop["cycles_done"]
        self.accepted_since_eval, self.elapsed = loop["accepted_since_eval"], loop["elapsed"]
        self.deferrals_in_row = loop.get("deferrals_in_row", 0)
        self.before = None  # measured again on resume: per-sample losses are not stored
        self.log = json.loads(meta["log"])

    # --- measurements ---------------------------------------------------------------------------

    def _workers(self, dataset) -> int:
        return default_workers(dataset) if self.workers is None else self.workers

    def _eval(self, dataset, desc, keep_per_sample=False) -> Metrics:
        return evaluate(self.module, dataset, self.s.batch_size, self.setup.device,
                        progress=self.progress, desc=desc, autocast_dtype=self.autocast_dtype,
                        label_smoothing=self.s.label_smoothing, keep_per_sample=keep_per_sample,
                        workers=self._workers(dataset), channels_last=self.channels_last)

    def _objective(self, m: Metrics) -> float:
        """The loss the statistics differentiate: steps are predicted and accepted on it."""
        return m.objective if m.objective is not None else m.loss

    def _stats(self):
        return collect(self.module, self.flat.params, self.setup.decision, self.s.batch_size,
                       self.setup.device, self.s.label_smoothing, self.autocast_dtype, self.progress,
                       workers=self._workers(self.setup.decision), channels_last=self.channels_last)

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        target = self.setup.target
        start = time.time() - self.elapsed
        if self.before is None:  # a new run, or a resumed one: per-sample losses are not stored
            self.before = self._eval(self.setup.accept, "acceptance", keep_per_sample=True)
        if not self.log:  # the dense model: first point of the curve
            ev = self._eval(self.setup.evaluation, "evaluation")
            self._record({"step": 0, "phase": "dense", "accepted": True, "removed": 0, "restored": 0, "size": 0,
                          **self.before.as_dict("accept_"), **ev.as_dict("eval_")}, start)
        bar = tqdm(total=target, initial=self.flat.removed(), desc="removed", unit="w",
                   disable=not self.progress or not is_main())
        while self.flat.removed() < target or self.cycles_done < self.s.restore_cycles:
            swapping = self.flat.removed() >= target
            stats = self._stats()  # every criterion's steps are predicted, and so accepted, from these
            while True:  # retry at smaller sizes on the same statistics: the model has not changed
                outcome = self._try_step(stats, target, swapping)
                if outcome["accepted"]:
                    break
                self._record(outcome, start)
            if swapping:
                self.cycles_done += 1
            self.accepted_since_eval += 1
            if self.accepted_since_eval >= self.s.eval_every or (self.flat.removed() >= target and
                                                                 self.cycles_done >= self.s.restore_cycles):
                outcome.update(self._eval(self.setup.evaluation, "evaluation").as_dict("eval_"))
                self.accepted_since_eval = 0
            self._record(outcome, start)
            bar.n = self.flat.removed()
            bar.set_postfix(size=self.size, top1=f"{self.before.top1:.2f}", loss=f"{self.before.loss:.4f}")
            bar.refresh()
        bar.close()
        return self.log

    def _record(self, row: dict, start: float) -> None:
        self.elapsed = time.time() - start
        row = {**row, "seconds": round(self.elapsed, 2)}
        self.log.append(row)
        if is_main():  # every rank holds the same state; one writes it
            self._save_state()
        if self.on_step:
            self.on_step(row)

    def _choose_removals(self, stats, k: int) -> torch.Tensor:
        flat = self.flat
        if k <= 0:
            return torch.empty(0, dtype=torch.long, device=flat.base.device)
        gen = torch.Generator().manual_seed(self.s.seed * 1_000_003 + self.step_index)
        w = flat.split(flat.base)
        scores = flat.cat({n: self.criterion.scores(n, w[n], stats, gen) for n in flat.names}).float()
        available = flat.mask & flat.eligible
        fresh = available & ~flat.deferred
        pool = fresh if int(fresh.sum()) >= k else available  # deferral yields when too few are left
        scores = scores.masked_fill(~pool, math.inf)
        return torch.topk(scores, k, largest=False, sorted=False).indices

    def _choose_restores(self, stats, k: int) -> torch.Tensor:
        flat = self.flat
        if k <= 0:
            return torch.empty(0, dtype=torch.long, device=flat.base.device)
        w = flat.split(flat.base)
        gain = flat.cat({n: criteria.predicted_restore(w[n], stats, n) for n in flat.names})
        gain = gain.masked_fill(flat.mask | ~flat.eligible | (gain >= 0), math.inf)  # only predicted gains
        k = min(k, int(torch.isfinite(gain).sum()))
        return torch.topk(gain, k, largest=False, sorted=False).indices if k else gain.new_empty(0, dtype=torch.long)

    def _predicted(self, stats, removed_idx, restored_idx) -> tuple[float, float] | tuple[None, None]:
        """The step's predicted loss change, and its curvature part sum(1/2*F*w^2), always >= 0,
        which sets the scale of the step's acceptable surprise."""
        if stats is None:
            return None, None
        flat = self.flat
        g, f = flat.cat(stats.grad), flat.cat(stats.second)
        idx = torch.cat([removed_idx, restored_idx])
        sign = torch.cat([-torch.ones_like(removed_idx), torch.ones_like(restored_idx)]).to(g.dtype)
        w = flat.base[idx]
        curvature = (0.5 * f[idx] * w * w).double().sum()
        return float((sign * g[idx] * w).double().sum() + curvature), float(curvature)

    def _try_step(self, stats, target: int, swapping: bool) -> dict:
        flat, s = self.flat, self.s
        min_size = min(self._steps(s.min_step), self.size)
        if swapping:
            restored = self._choose_restores(stats, max(1, int(round(s.restore_fraction * self.size))))
            flat.mask[restored] = True  # restore first, so the deletions are chosen among all survivors
            removed = self._choose_removals(stats, len(restored))
        else:
            restored = self._choose_restores(stats, 0)
            removed = self._choose_removals(stats, min(self.size, target - flat.removed()))
        flat.mask[removed] = False
        flat.write()
        predicted, curvature = self._predicted(stats, removed, restored)
        after = self._eval(self.setup.accept, "acceptance", keep_per_sample=True)
        actual = self._objective(after) - self._objective(self.before)
        # Standard error of the measured change, from the paired per-sample differences (of all ranks).
        diff = after.per_sample - self.before.per_sample
        sums = torch.stack([diff.sum(), (diff * diff).sum(), diff.new_tensor(len(diff))])
        all_reduce_(sums)
        d1, d2, n = sums.tolist()
        stderr = max(0.0, (d2 - d1 * d1 / n) / max(n - 1, 1)) ** 0.5 / n ** 0.5
        # At the smallest size a failed step says its weights are mispredicted, not that it was too big:
        # defer them (ranked last from now on) and try the next ones; only after MAX_DEFERRALS failures in
        # a row is a step taken regardless, so that the run still ends at the exact count.
        forced = self.size <= min_size and self.deferrals_in_row >= MAX_DEFERRALS
        # Each step may also spend its share of the run's budget: without it, steps of weights whose
        # predicted change is ~0 are rejected by noise alone and the run crawls at the minimum size.
        dense = self.log[0]  # the loss budget is a fraction of the dense model's acceptance loss
        budget = s.loss_budget * dense.get("accept_objective", dense["accept_loss"]) * len(removed) / self.budget_target
        ok = predicted is None or actual <= predicted + s.tolerance * curvature + 2 * stderr + budget
        if s.max_top1_drop is not None and self.before.top1 - after.top1 > s.max_top1_drop:
            ok = False
        row = {"stderr": stderr, "step": self.step_index + 1, "phase": "swap" if swapping else "remove", "accepted": ok or forced,
               "forced": forced and not ok, "size": len(removed), "restored": len(restored),
               "predicted": predicted, "actual": actual,
               "calib_loss": stats.loss if stats else None, "calib_top1": stats.top1 if stats else None,
               **after.as_dict("accept_")}
        self.step_index += 1
        if ok or forced:
            self.deferrals_in_row = 0
            self.before = after
            self.size = min(self._steps(s.max_step), max(min_size, int(math.ceil(self.size * s.grow))))
        else:
            flat.mask[removed] = True
            flat.mask[restored] = False
            flat.write()
            if self.size <= min_size:
                flat.deferred[removed] = True
                self.deferrals_in_row += 1
                row["deferred"] = len(removed)
            self.size = max(min_size, int(self.size * s.shrink))
        row["removed"] = flat.removed()
        return row


def write_results(run: Run, command: str, extra_manifest: dict | None = None) -> dict:
    """The run folder: model, mask, curve (CSV, PNG), steps log and manifest."""
    from connectome import __version__
    from connectome.pruning import curves
    import numpy, safetensors, timm, torchvision

    setup, s, out = run.setup, run.s, run.out
    mask = run.flat.to_mask()
    model = setup.loaded.module
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    removed = run.flat.removed()
    meta = {"base_model": s.model, "base_weights": setup.loaded.weights, "base_sha256": setup.base_sha256,
            "removed": str(removed), "prunable": str(run.prunable), "criterion": s.criterion,
            "format": "connectome.model/1"}
    save_state(out / "model.safetensors", state, meta)
    mask.save(out / "mask.safetensors", meta)
    accepted = [r for r in run.log if r["accepted"]]
    curves.write_csv(out / "curve.csv", accepted)
    write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in run.log))
    title = f"{s.model} · {s.criterion} · {removed:,} of {run.prunable:,} prunable weights removed"
    curves.plot(out / "curve.png", accepted, title, run.prunable)
    final = next(r for r in reversed(accepted) if r.get("eval_top1") is not None)
    dense = accepted[0]
    manifest = {
        "command": command, "settings": asdict(s), "settings_digest": s.digest(),
        "model": {"spec": s.model, "weights": setup.loaded.weights, "base_sha256": setup.base_sha256, **setup.loaded.meta},
        "data": {"spec": s.data or setup.loaded.dataset, "decision_samples": len(setup.decision),
                 "accept_samples": len(setup.accept), "eval_samples": len(setup.evaluation)},
        "result": {"removed": removed, "prunable": run.prunable, "target": setup.target,
                   "pre_existing_zeros": int((~run.flat.eligible).sum()),
                   "steps": len(run.log), "accepted_steps": len(accepted) - 1,
                   "dense": {k: dense.get(f"eval_{k}") for k in ("top1", "top5", "loss")},
                   "final": {k: final.get(f"eval_{k}") for k in ("top1", "top5", "loss")},
                   "seconds": round(run.elapsed, 1)},
        "versions": {"connectome": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "timm": timm.__version__, "safetensors": safetensors.__version__, "numpy": numpy.__version__},
        "device": setup.device, **(extra_manifest or {}),
    }
    write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    return manifest
