"""One training of a masked network: Adam on the survivors, validation every `eval_every` iterations
with early stopping on the validation loss, and the training state that lets a killed training resume.

The data order is a function of the seed and the iteration, and the state written every
`checkpoint_every` iterations holds everything else that moves (model, best weights, Adam moments,
evaluation log, the global RNG), so a resumed training reaches the numbers of one never killed.
"""

import json
import math
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from connectome.data import batches
from connectome.errors import ConnectomeError
from connectome.evaluate import evaluate
from connectome.io import read_metadata, save_state
from connectome.pruning.mask import Mask

EVAL_BATCH = 1000


def eval_batch(model_name: str, device) -> int:
    """Images per evaluation batch. On a CPU a conv network's activations for 1,000 CIFAR images (64
    channels of 32x32 floats each: 262 MB a layer) overflow the caches: 60 at a time evaluate about
    twice as fast on one core, with bit-identical logits (measured on Conv-2/4/6), and validation is a
    third of a Conv-2 training's time. A GPU, and LeNet's small layers, keep large batches."""
    return 60 if model_name.startswith("conv") and torch.device(device).type == "cpu" else EVAL_BATCH


@dataclass
class Data:
    """The three subsets: training, validation (held out of the training split), test."""
    train: object
    val: object
    test: object


@dataclass
class Log:
    """What a training has done so far; the checkpoint stores it as JSON."""
    iteration: int
    evals: list = field(default_factory=list)  # [iteration, validation loss, validation top-1]
    best: list | None = None  # the entry of `evals` with the lowest loss
    elapsed: float = 0.0  # seconds before the last resume


@dataclass
class Trained:
    model: nn.Module  # at the last iteration
    best_state: dict[str, torch.Tensor]  # at the early-stop iteration
    log: Log
    started: float  # time.time() the training would have started at, had it never been killed


class Trainer:
    """Trains networks for one run. `job` names a training ((level, arm)) in the checkpoint, which
    holds one training at a time; `digest` ties it to the run's settings."""

    def __init__(self, s, data: Data, device: str, checkpoint: Path, progress: bool = True,
                 on_iteration: Callable | None = None):
        self.s, self.data, self.device, self.checkpoint = s, data, device, Path(checkpoint)
        self.progress, self.on_iteration = progress, on_iteration
        self.eval_batch = eval_batch(s.model, device)

    def train(self, job: tuple, model: nn.Module, mask: Mask, start: int,
              snapshot: tuple[int, Path] | None = None) -> Trained:
        """Train `model` (already on the device, masked) from iteration `start` to `iterations`.
        `snapshot`: (iteration, path) where the model's state is saved on the way (rewinding)."""
        s, dev = self.s, self.device
        params = dict(model.named_parameters())
        masked = [(params[n], m.to(dev, params[n].dtype)) for n, m in mask.items()]
        # The fused kernel: on 2 CPU cores it halves the optimiser's share of an iteration.
        opt = torch.optim.Adam(model.parameters(), lr=s.lr, fused=True)
        log = Log(iteration=start)
        best_state = self._resume(job, model, opt, log)
        steps_per_epoch = -(-len(self.data.train) // s.batch_size)
        t0 = time.time() - log.elapsed
        bar = tqdm(total=s.iterations, initial=log.iteration, desc=" ".join(map(str, ("level", *job))), unit="it",
                   disable=not self.progress, leave=False, mininterval=2)
        model.train()
        while log.iteration < s.iterations:
            epoch, position = divmod(log.iteration, steps_per_epoch)
            # Each epoch's order from (seed, epoch) alone: a resumed training skips to its position.
            data = batches(self.data.train, s.batch_size, shuffle=True, seed=s.seed * 1_000_003 + epoch)
            for x, y in islice(data, position, None):
                loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for p, m in masked:  # pruned weights get no gradient, so Adam's moments stay zero...
                    p.grad.mul_(m)
                opt.step()
                with torch.no_grad():  # ...and are set to zero again, exactly, whatever the optimiser did
                    for p, m in masked:
                        p.mul_(m)
                log.iteration = it = log.iteration + 1
                if snapshot is not None and it == snapshot[0]:
                    save_state(snapshot[1], model.state_dict(), {"iteration": it})
                if it % s.eval_every == 0 or it == s.iterations:
                    v = evaluate(model, self.data.val, self.eval_batch, dev)
                    if not math.isfinite(v.loss):  # the weights overflowed: every later number is NaN
                        bar.close()
                        raise ConnectomeError(
                            f"training of level {job[0]} ({job[1]}) diverged: validation loss {v.loss} at iteration "
                            f"{it:,}; lower --lr (now {s.lr:g})")
                    log.evals.append([it, v.loss, v.top1])
                    if log.best is None or v.loss < log.best[1]:
                        log.best = [it, v.loss, v.top1]
                        best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
                    bar.update(it - bar.n)
                    bar.set_postfix(val_loss=f"{v.loss:.4f}", val_top1=f"{v.top1:.2f}")
                if it % s.checkpoint_every == 0 and it < s.iterations:
                    log.elapsed = time.time() - t0
                    self._save(job, model, opt, best_state, log)
                if self.on_iteration:
                    self.on_iteration(*job, it)
                if it == s.iterations:
                    break
        bar.close()
        return Trained(model, best_state, log, t0)

    def done(self) -> None:
        """The training's result is written: its state is no longer needed."""
        self.checkpoint.unlink(missing_ok=True)

    # --- training state ------------------------------------------------------------------------

    def _save(self, job, model, opt, best_state, log: Log) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
        for i, st in opt.state_dict()["state"].items():
            tensors.update({f"opt.{i}.{k}": v if torch.is_tensor(v) else torch.tensor(v) for k, v in st.items()})
        tensors["rng"] = torch.get_rng_state()
        run = {"iteration": log.iteration, "evals": log.evals, "best": log.best, "elapsed": log.elapsed}
        meta = {"job": json.dumps(list(job)), "digest": self.s.digest(), "run": json.dumps(run)}
        save_state(self.checkpoint, tensors, meta)

    def _resume(self, job, model, opt, log: Log) -> dict | None:
        """Restore the state of this training if the checkpoint holds it; return the best weights."""
        if not self.checkpoint.exists():
            return None
        meta = read_metadata(self.checkpoint)
        if json.loads(meta["job"]) != list(job) or meta.get("digest") != self.s.digest():
            return None  # another training's, or another run's: this one starts afresh
        t = load_file(str(self.checkpoint))
        model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        state: dict[int, dict] = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
        torch.set_rng_state(t["rng"])
        run = json.loads(meta["run"])
        log.iteration, log.evals, log.best, log.elapsed = run["iteration"], run["evals"], run["best"], run["elapsed"]
        best = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
        return best or None
