"""The lottery-ticket experiment of Frankle & Carbin (ICLR 2019, arXiv 1803.03635).

Train a randomly initialised network; remove a fraction of the surviving weights of smallest magnitude
(per layer, or across layers); reset the survivors to their initial values (or to their values at
iteration k: "rewinding"); train again; repeat for some levels. Two controls tell a winning ticket from
a merely sparse network: the ticket's mask with a fresh random initialisation, and a random mask with
the ticket's per-layer sparsity on the original initialisation.

A run folder is named by a hash of the settings that determine its numbers. Each training (a level's
ticket, or a control) writes its result atomically when it ends; in between, the training state (model,
Adam moments, evaluation log, RNG) is written every `checkpoint_every` iterations. The data order is a
function of the seed and the iteration, so a killed run resumes where it stopped and reaches the same
numbers. The layout: settings.json, init.safetensors, levels/<L>/{mask,model}.safetensors and
result.json, levels/<L>/<control>/ likewise, lottery.csv, lottery.png.
"""

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from connectome.io import read_metadata, save_state, write_text
from connectome.data.datasets import ImageTensors, batches, load_dataset, subset
from connectome.errors import ConnectomeError
from connectome.evaluate import evaluate
from connectome.pruning.mask import Mask
from connectome.pruning.run import prunable_parameters
from connectome.models.reference import (ARCHITECTURES, FASHION_MNIST_STATS, MNIST_STATS, glorot_normal_,
                                  lenet_300_100)


@dataclass
class LotterySettings:
    """Every hyperparameter of a run. Defaults are the paper's LeNet-300-100 values; those marked
    (no effect) are off at their default."""
    model: str
    data: str | None = None  # default: the data the architecture was made for
    iterations: int = 50000  # training iterations per level
    batch_size: int = 60
    lr: float = 1.2e-3  # Adam
    strategy: str = "layerwise"  # a name in STRATEGIES
    conv_rate: float = 0.0  # fraction of the surviving conv weights removed per level (no effect)
    fc_rate: float = 0.2  # ... of each hidden fully connected layer
    output_rate: float = 0.1  # ... of the output layer (the paper: half the fc rate)
    global_rate: float = 0.2  # strategy "global": fraction of all surviving weights, pooled
    rewind_iter: int = 0  # reset survivors to their values at this iteration; 0 = the initialisation (no effect)
    val_samples: int = 5000  # held out of the training split; early stopping reads only these
    train_samples: int | None = None  # None: the rest of the training split
    test_samples: int | None = None  # None: the whole test split
    eval_every: int = 100  # iterations between validation evaluations
    seed: int = 0
    # What to compute rather than how: a run folder accumulates levels and controls, and saving
    # changes no number, so none of these enter the hash.
    levels: int = 0  # pruning levels after the dense training
    controls: list[str] = field(default_factory=list)  # names in CONTROLS (no effect)
    control_levels: list[int] | None = None  # levels that get the controls; None = every pruned level
    checkpoint_every: int = 500  # iterations between saves of the training state

    RUNTIME = ("levels", "controls", "control_levels", "checkpoint_every")

    def hashed(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.hashed(), sort_keys=True).encode()).hexdigest()

    def rate(self, kind: str) -> float:
        return {"conv": self.conv_rate, "fc": self.fc_rate, "output": self.output_rate}[kind]


SETTING_NAMES = {f.name for f in fields(LotterySettings)}
INT_SETTINGS = ("iterations", "batch_size", "rewind_iter", "val_samples", "train_samples", "test_samples",
                "eval_every", "seed", "levels", "checkpoint_every")
FLOAT_SETTINGS = ("lr", "conv_rate", "fc_rate", "output_rate", "global_rate")


def default_out(s: LotterySettings) -> Path:
    return Path("runs") / f"lottery-{s.digest()[:10]}"


# --- networks ------------------------------------------------------------------------------------

MODELS = ("lenet_300_100", "lenet_300_100_mnist", "conv2", "conv4", "conv6")
LENET_STATS = {"mnist": MNIST_STATS, "fashion-mnist": FASHION_MNIST_STATS}


def build(name: str, data_name: str) -> nn.Module:
    if name.startswith("lenet_300_100"):
        # The network normalises inside itself: with the statistics of the data it is trained on.
        return lenet_300_100(LENET_STATS.get(data_name, MNIST_STATS))
    return ARCHITECTURES[name].build()


def initial_state(name: str, data_name: str, seed: int) -> dict[str, torch.Tensor]:
    """Gaussian Glorot weights and zero biases, from a seed and nothing else."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = glorot_normal_(build(name, data_name))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def layer_kinds(model: nn.Module) -> dict[str, str]:
    """conv, fc or output for each prunable weight: the paper prunes each kind at its own rate."""
    modules = dict(model.named_modules())
    kinds = {n: "conv" if isinstance(modules[n.rpartition(".")[0]], nn.Conv2d) else "fc"
             for n in prunable_parameters(model)}
    kinds[[n for n, k in kinds.items() if k == "fc"][-1]] = "output"
    return kinds


# --- pruning strategies: (trained weights, current mask) -> new mask -----------------------------

def _remove_smallest(scores: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """`alive` less its k entries of smallest score; a stable sort breaks ties by position."""
    flat = alive.reshape(-1)
    order = torch.sort(scores.reshape(-1).float().masked_fill(~flat, math.inf), stable=True).indices
    out = flat.clone()
    out[order[:k]] = False
    return out.view_as(alive)


class LayerwiseMagnitude:
    """Each layer loses its rate of its surviving weights, smallest magnitude first (the paper's
    Lenet and Conv-2/4/6)."""

    def __init__(self, rates: dict[str, float]):
        self.rates = rates

    @classmethod
    def from_settings(cls, s: LotterySettings, kinds: dict[str, str]):
        return cls({n: s.rate(k) for n, k in kinds.items()})

    def prune(self, weights: dict[str, torch.Tensor], mask: Mask) -> Mask:
        return Mask({n: _remove_smallest(weights[n].abs(), m, int(round(self.rates[n] * int(m.sum()))))
                     for n, m in mask.items()})


class GlobalMagnitude:
    """All layers pooled: the rate of all surviving weights goes, smallest magnitude first, wherever
    they are (the paper's Resnet-18 and VGG-19, where small layers would otherwise be bottlenecks)."""

    def __init__(self, rate: float):
        self.rate = rate

    @classmethod
    def from_settings(cls, s: LotterySettings, kinds: dict[str, str]):
        return cls(s.global_rate)

    def prune(self, weights: dict[str, torch.Tensor], mask: Mask) -> Mask:
        names = mask.names()
        alive = torch.cat([mask[n].reshape(-1) for n in names])
        scores = torch.cat([weights[n].abs().reshape(-1).float() for n in names])
        kept = _remove_smallest(scores, alive, int(round(self.rate * int(alive.sum()))))
        parts = kept.split([mask[n].numel() for n in names])
        return Mask({n: p.view_as(mask[n]).clone() for n, p in zip(names, parts)})


STRATEGIES = {"layerwise": LayerwiseMagnitude, "global": GlobalMagnitude}


def check_shrinks(old: Mask, new: Mask) -> None:
    """A level may only remove weights: same tensors, same shapes, no weight revived."""
    if old.names() != new.names():
        raise ValueError(f"pruning changed the masked tensors: {old.names()} -> {new.names()}")
    for n, m in old.items():
        if new[n].shape != m.shape or bool((new[n] & ~m).any()):
            raise ValueError(f"pruning revived weights or changed the shape of {n}")


# --- controls: the ticket's level, trained from another mask or other weights ---------------------

class RandomReinit:
    """The ticket's mask with a new initialisation from the same distribution (the paper, Section 2)."""

    def start(self, ticket: Mask, start_state: dict, fresh_state, seed: int) -> tuple[Mask, dict]:
        return ticket, fresh_state(seed)


class RandomPrune:
    """A random mask with the ticket's per-layer counts, on the ticket's starting weights (Appendix E;
    open_lth's randomly_prune branch)."""

    def start(self, ticket: Mask, start_state: dict, fresh_state, seed: int) -> tuple[Mask, dict]:
        gen = torch.Generator().manual_seed(seed)
        masks = {}
        for n, m in ticket.items():
            flat = torch.zeros(m.numel(), dtype=torch.bool)
            flat[torch.randperm(m.numel(), generator=gen)[:int(m.sum())]] = True
            masks[n] = flat.view_as(m)
        return Mask(masks), start_state


CONTROLS = {"random_reinit": RandomReinit, "random_prune": RandomPrune}


def derived_seed(*parts) -> int:
    """A seed for one purpose: controls of different levels draw independent weights and masks."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "big")


# --- the run -------------------------------------------------------------------------------------

def validate(s: LotterySettings) -> None:
    # Recipes are YAML: a quoted number would otherwise fail later, and less clearly.
    for names, kinds, what in ((INT_SETTINGS, int, "an integer"), (FLOAT_SETTINGS, (int, float), "a number")):
        for name in names:
            v = getattr(s, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, kinds)):
                raise ConnectomeError(f"{name} must be {what}, got {v!r}")
    if s.model not in MODELS:
        raise ConnectomeError(f"unknown lottery model {s.model!r}: choose from {', '.join(MODELS)}")
    if s.strategy not in STRATEGIES:
        raise ConnectomeError(f"unknown pruning strategy {s.strategy!r}: choose from {', '.join(STRATEGIES)}")
    unknown = [c for c in s.controls if c not in CONTROLS]
    if unknown:
        raise ConnectomeError(f"unknown controls {unknown}: choose from {', '.join(CONTROLS)}")
    for name in ("conv_rate", "fc_rate", "output_rate", "global_rate"):
        if not 0 <= getattr(s, name) < 1:
            raise ConnectomeError(f"{name} must lie in [0, 1), got {getattr(s, name)}")
    for name in ("iterations", "batch_size", "eval_every", "checkpoint_every", "val_samples"):
        if getattr(s, name) < 1:
            raise ConnectomeError(f"{name} must be at least 1, got {getattr(s, name)}")
    if not s.lr > 0:
        raise ConnectomeError(f"lr must be positive, got {s.lr}")
    if not 0 <= s.rewind_iter < s.iterations:
        raise ConnectomeError(f"rewind_iter must lie in [0, iterations={s.iterations}), got {s.rewind_iter}")
    if s.levels < 0:
        raise ConnectomeError(f"levels must be at least 0, got {s.levels}")
    bad = [lv for lv in (s.control_levels or []) if not 1 <= lv <= s.levels]
    if bad:
        raise ConnectomeError(f"control levels {bad} are not pruned levels of this run (1..{s.levels})")


class Lottery:
    """One run folder; `run()` trains whatever of the asked levels and controls is not there yet."""

    def __init__(self, s: LotterySettings, out: str | Path | None = None, device: str = "cpu",
                 progress: bool = True, on_iteration=None):
        validate(s)
        self.s, self.device, self.progress, self.on_iteration = s, device, progress, on_iteration
        arch = ARCHITECTURES["lenet_300_100_mnist" if s.model == "lenet_300_100" else s.model]
        splits = load_dataset(s.data or arch.dataset)
        if not isinstance(splits.train, ImageTensors):
            raise ConnectomeError("the lottery experiment trains on in-memory datasets (mnist, fashion-mnist, cifar10)")
        if tuple(splits.train.images.shape[1:]) != arch.input_shape:
            raise ConnectomeError(f"{s.model} takes {arch.input_shape} images; {splits.name} has "
                                  f"{tuple(splits.train.images.shape[1:])}")
        if s.val_samples >= len(splits.train):
            raise ConnectomeError(f"val_samples {s.val_samples:,} leaves no training data of {len(splits.train):,}")
        self.data_name = splits.name
        self.val_set = subset(splits.train, s.val_samples, s.seed)
        self.train_set = subset(splits.train, s.train_samples, s.seed, skip=s.val_samples)
        self.test_set = subset(splits.test, s.test_samples, s.seed) if s.test_samples else splits.test
        self.out = Path(out) if out else default_out(s)
        self._claim_folder()
        model = build(s.model, self.data_name)
        self.kinds = layer_kinds(model)
        self.strategy = STRATEGIES[s.strategy].from_settings(s, self.kinds)
        init = self.out / "init.safetensors"
        if not init.exists():
            save_state(init, initial_state(s.model, self.data_name, s.seed), {"seed": s.seed})
        self.init_state = load_file(str(init))

    def _claim_folder(self) -> None:
        path = self.out / "settings.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("digest") != self.s.digest():
                diff = sorted(k for k, v in self.s.hashed().items() if stored.get("settings", {}).get(k) != v)
                raise ConnectomeError(f"{self.out} holds a run with other settings ({', '.join(diff)}): "
                                      f"choose another --out or leave it out")
            return
        write_text(path, json.dumps({"settings": self.s.hashed(), "digest": self.s.digest()}, indent=2))

    # --- the sequence of trainings -------------------------------------------------------------

    def jobs(self) -> list[tuple[int, str]]:
        """(level, arm) in training order: a level's ticket, then its controls."""
        levels = set(self.s.control_levels) if self.s.control_levels is not None else set(range(1, self.s.levels + 1))
        out = []
        for level in range(self.s.levels + 1):
            out.append((level, "ticket"))
            out += [(level, c) for c in self.s.controls if level in levels]
        return out

    def run(self) -> list[dict]:
        return [self.result(level, arm) or self.train(level, arm) for level, arm in self.jobs()]

    def folder(self, level: int, arm: str) -> Path:
        return self.out / "levels" / str(level) / ("" if arm == "ticket" else arm)

    def result(self, level: int, arm: str) -> dict | None:
        path = self.folder(level, arm) / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    def ticket_mask(self, level: int) -> Mask:
        """Level 0 keeps everything; level L prunes the trained ticket of level L-1."""
        path = self.folder(level, "ticket") / "mask.safetensors"
        if path.exists():
            return Mask.load(path)
        if level == 0:
            mask = Mask({n: torch.ones(self.init_state[n].shape, dtype=torch.bool) for n in self.kinds})
        else:
            previous = self.ticket_mask(level - 1)
            trained = load_file(str(self.folder(level - 1, "ticket") / "model.safetensors"))
            mask = self.strategy.prune({n: trained[n] for n in previous.names()}, previous)
            check_shrinks(previous, mask)
        mask.save(path, {"level": str(level)})
        return mask

    def start_state(self, level: int) -> dict[str, torch.Tensor]:
        """What the survivors are reset to: the initialisation, or iteration k of the dense training."""
        if level == 0 or self.s.rewind_iter == 0:
            return self.init_state
        return load_file(str(self.out / "rewind.safetensors"))

    def arm_start(self, level: int, arm: str) -> tuple[Mask, dict]:
        ticket, start = self.ticket_mask(level), self.start_state(level)
        if arm == "ticket":
            return ticket, start
        mask, state = CONTROLS[arm]().start(ticket, start, lambda seed: initial_state(self.s.model, self.data_name, seed),
                                            derived_seed(self.s.seed, arm, level))
        mask.save(self.folder(level, arm) / "mask.safetensors", {"level": str(level), "arm": arm})
        return mask, state

    def start_model(self, level: int, arm: str) -> tuple[nn.Module, Mask]:
        """The network a training starts from: its starting weights with the mask applied."""
        mask, start = self.arm_start(level, arm)
        model = build(self.s.model, self.data_name).to(self.device)
        model.load_state_dict(mask.apply(start))
        return model, mask

    # --- one training --------------------------------------------------------------------------

    def train(self, level: int, arm: str) -> dict:
        s, dev = self.s, self.device
        folder = self.folder(level, arm)
        model, mask = self.start_model(level, arm)
        params = prunable_parameters(model)
        masked = [(params[n], m.to(dev, params[n].dtype)) for n, m in mask.items()]
        # The fused kernel: on 2 CPU cores it halves the optimiser's share of an iteration.
        opt = torch.optim.Adam(model.parameters(), lr=s.lr, fused=True)
        run = {"iteration": s.rewind_iter if level > 0 else 0, "evals": [], "best": None, "elapsed": 0.0}
        best_state = self._resume(level, arm, model, opt, run)
        steps_per_epoch = -(-len(self.train_set) // s.batch_size)
        t0 = time.time() - run["elapsed"]
        bar = tqdm(total=s.iterations, initial=run["iteration"], desc=f"level {level} {arm}", unit="it",
                   disable=not self.progress, leave=False, mininterval=2)
        model.train()
        while run["iteration"] < s.iterations:
            epoch, position = divmod(run["iteration"], steps_per_epoch)
            data = batches(self.train_set, s.batch_size, shuffle=True, seed=s.seed * 1_000_003 + epoch)
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
                run["iteration"] = it = run["iteration"] + 1
                if level == 0 and arm == "ticket" and it == s.rewind_iter:
                    save_state(self.out / "rewind.safetensors", model.state_dict(), {"iteration": it})
                if it % s.eval_every == 0 or it == s.iterations:
                    v = evaluate(model, self.val_set, 1000, dev)
                    run["evals"].append([it, v.loss, v.top1])
                    if run["best"] is None or v.loss < run["best"][1]:
                        run["best"] = [it, v.loss, v.top1]
                        best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
                    bar.update(it - bar.n)
                    bar.set_postfix(val_loss=f"{v.loss:.4f}", val_top1=f"{v.top1:.2f}")
                if it % s.checkpoint_every == 0 and it < s.iterations:
                    run["elapsed"] = time.time() - t0
                    self._checkpoint(level, arm, model, opt, best_state, run)
                if self.on_iteration:
                    self.on_iteration(level, arm, it)
                if it == s.iterations:
                    break
        bar.close()
        final_test = evaluate(model, self.test_set, 1000, dev)
        kept, total = mask.kept(), mask.total()
        meta = {"level": level, "arm": arm, "iteration": s.iterations, "kept": kept, "total": total}
        save_state(folder / "model.safetensors", model.state_dict(), meta)
        model.load_state_dict(best_state)
        early_test = evaluate(model, self.test_set, 1000, dev)
        best_it, best_loss, best_top1 = run["best"]
        result = {
            "level": level, "arm": arm, "percent_remaining": 100.0 * kept / total, "kept": kept, "total": total,
            "layers": {n: {"kind": self.kinds[n], "kept": int(m.sum()), "total": m.numel()} for n, m in mask.items()},
            "early_stop_iter": best_it, "early_stop_val_loss": best_loss, "early_stop_val_acc": best_top1,
            "early_stop_test_acc": early_test.top1, "early_stop_test_loss": early_test.loss,
            "final_val_loss": run["evals"][-1][1], "final_val_acc": run["evals"][-1][2],
            "final_test_acc": final_test.top1, "final_test_loss": final_test.loss,
            "seconds": round(time.time() - t0, 1), "evals": run["evals"],
        }
        write_text(folder / "result.json", json.dumps(result, indent=1))
        (self.out / "checkpoint.safetensors").unlink(missing_ok=True)
        return result

    # --- training state ------------------------------------------------------------------------

    def _checkpoint(self, level, arm, model, opt, best_state, run) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
        for i, st in opt.state_dict()["state"].items():
            tensors.update({f"opt.{i}.{k}": v if torch.is_tensor(v) else torch.tensor(v) for k, v in st.items()})
        tensors["rng"] = torch.get_rng_state()
        meta = {"job": json.dumps([level, arm]), "digest": self.s.digest(), "run": json.dumps(run)}
        save_state(self.out / "checkpoint.safetensors", tensors, meta)

    def _resume(self, level, arm, model, opt, run) -> dict | None:
        """Restore the state of this training if the checkpoint holds it; return the best weights."""
        path = self.out / "checkpoint.safetensors"
        if not path.exists():
            return None
        meta = read_metadata(path)
        if json.loads(meta["job"]) != [level, arm] or meta.get("digest") != self.s.digest():
            return None
        t = load_file(str(path))
        model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        state: dict[int, dict] = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
        torch.set_rng_state(t["rng"])
        run.update(json.loads(meta["run"]))
        best = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
        return best or None
