"""A lottery run: its folder, the sequence of trainings, each level's mask and starting weights, and the
results.

Train a randomly initialised network; remove a fraction of the surviving weights of smallest magnitude
(per layer, or across layers); reset the survivors to their initial values (or to their values at
iteration k: "rewinding"); train again; repeat for some levels. Controls (connectome.lottery.controls)
train a level from another mask or other weights.

A run folder is named by a hash of the settings that determine its numbers. Each training (a level's
ticket, or a control) writes its result atomically when it ends, and a killed one resumes from its
training state (connectome.lottery.trainer). The layout: settings.json, init.safetensors,
levels/<L>/{mask,model}.safetensors and result.json, levels/<L>/<control>/ likewise, lottery.csv,
lottery.png; rewind.safetensors when rewinding, checkpoint.safetensors while a training runs.
"""

import contextlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from connectome.data import ImageTensors, load_dataset, subset
from connectome.data.fit import check_fit
from connectome.device import resolve_device
from connectome.errors import ConnectomeError
from connectome.evaluate import evaluate
from connectome.io import folder_lock, save_state, write_text
from connectome.lottery.controls import CONTROLS, derived_seed
from connectome.lottery.networks import architecture, build, initial_state, layer_kinds
from connectome.lottery.report import write_report
from connectome.lottery.settings import LotterySettings
from connectome.lottery.strategies import check_shrinks, make_strategy
from connectome.lottery.trainer import Data, Trainer
from connectome.pruning.mask import Mask


class Lottery:
    """One run folder; `run()` trains whatever of the asked levels and controls is not there yet."""

    def __init__(self, s: LotterySettings, out: str | Path | None = None, progress: bool = True,
                 on_iteration=None):
        # Settings built in code (dataclasses.replace, a constructor call) skipped validation: it runs
        # here, so every way into a run is checked by the same code as a recipe.
        s = type(s).from_mapping(s.to_dict(), "lottery settings")
        self.s, self.device = s, resolve_device(s.device)
        arch = architecture(s.model)
        data = s.data or arch.dataset
        splits = load_dataset(data)
        if not isinstance(splits.train, ImageTensors):
            raise ConnectomeError("the lottery experiment trains on in-memory datasets (mnist, fashion-mnist, cifar10)")
        network = build(s.model, splits.name)
        check_fit(network, splits.train, splits.num_classes, data, s.model, "cpu")  # one sample, before any training
        if s.val_samples >= len(splits.train):
            raise ConnectomeError(f"val_samples {s.val_samples:,} leaves no training data of {len(splits.train):,}")
        self.data_name = splits.name
        # Validation first, training after it, from one seeded order: the two never overlap.
        val = subset(splits.train, s.val_samples, s.seed)
        train = subset(splits.train, s.train_samples, s.seed, skip=s.val_samples)
        self.data = Data(train, val, subset(splits.test, s.test_samples, s.seed) if s.test_samples else splits.test)
        self.out = Path(out) if out else s.default_out()
        s.claim(self.out)
        self.kinds = layer_kinds(network)
        self.strategy = make_strategy(s, self.kinds)
        init = self.out / "init.safetensors"
        if not init.exists():
            save_state(init, initial_state(s.model, self.data_name, s.seed), {"seed": s.seed})
        self.init_state = load_file(str(init))
        self.trainer = Trainer(s, self.data, self.device, self.out / "checkpoint.safetensors", progress,
                               on_iteration)

    # --- the sequence of trainings -------------------------------------------------------------

    def jobs(self) -> list[tuple[int, str]]:
        """(level, arm) in training order: a level's ticket, then its controls."""
        s = self.s
        levels = set(s.control_levels) if s.control_levels is not None else set(range(1, s.levels + 1))
        out = []
        for level in range(s.levels + 1):
            out.append((level, "ticket"))
            out += [(level, c) for c in s.controls if level in levels]
        return out

    def run(self) -> list[dict]:
        """Train what is missing, write lottery.csv and lottery.png; the rows in training order."""
        if self.s.threads:
            torch.set_num_threads(self.s.threads)
        rows = [self.result(level, arm) or self.train(level, arm) for level, arm in self.jobs()]
        write_report(self.out, rows, self.title())
        return rows

    def title(self) -> str:
        s = self.s
        return (f"{s.model} on {self.data_name}: {s.strategy} magnitude pruning, Adam {s.lr:g}, "
                f"{s.iterations:,} iterations{f', rewind to {s.rewind_iter}' if s.rewind_iter else ''}")

    def folder(self, level: int, arm: str) -> Path:
        return self.out / "levels" / str(level) / ("" if arm == "ticket" else arm)

    def result(self, level: int, arm: str) -> dict | None:
        path = self.folder(level, arm) / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    # --- where a training starts -----------------------------------------------------------------

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
        s = self.s
        mask, state = CONTROLS[arm]().start(ticket, start, lambda seed: initial_state(s.model, self.data_name, seed),
                                            derived_seed(s.seed, arm, level))
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
        """Train one (level, arm), write its model and result.json; the result. One process at a time
        per run folder: two would train the same level and overwrite each other's training state (a
        run of days is restarted by hand, in a new session, while the old process may still live)."""
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(folder_lock(self.out, wait=False))
            except ConnectomeError:
                raise ConnectomeError(f"{self.out} is being trained by another process: one process per run "
                                      f"folder (start it again once that one stops; it resumes)") from None
            done = self.result(level, arm)  # the other process may have finished it meanwhile
            return done if done is not None else self._train(level, arm)

    def _train(self, level: int, arm: str) -> dict:
        s, dev, test = self.s, self.device, self.data.test
        folder = self.folder(level, arm)
        model, mask = self.start_model(level, arm)
        # Pruned levels start from the rewound weights, so they train the iterations after k.
        start = s.rewind_iter if level > 0 else 0
        snapshot = (s.rewind_iter, self.out / "rewind.safetensors") if level == 0 and arm == "ticket" else None
        t = self.trainer.train((level, arm), model, mask, start, snapshot)
        final_test = evaluate(t.model, test, self.trainer.eval_batch, dev)
        kept, total = mask.kept(), mask.total()
        meta = {"level": level, "arm": arm, "iteration": s.iterations, "kept": kept, "total": total}
        save_state(folder / "model.safetensors", t.model.state_dict(), meta)
        t.model.load_state_dict(t.best_state)
        early_test = evaluate(t.model, test, self.trainer.eval_batch, dev)
        best_it, best_loss, best_top1 = t.log.best
        result = {
            "level": level, "arm": arm, "percent_remaining": 100.0 * kept / total, "kept": kept, "total": total,
            "layers": {n: {"kind": self.kinds[n], "kept": int(m.sum()), "total": m.numel()} for n, m in mask.items()},
            "early_stop_iter": best_it, "early_stop_val_loss": best_loss, "early_stop_val_acc": best_top1,
            "early_stop_test_acc": early_test.top1, "early_stop_test_loss": early_test.loss,
            "final_val_loss": t.log.evals[-1][1], "final_val_acc": t.log.evals[-1][2],
            "final_test_acc": final_test.top1, "final_test_loss": final_test.loss,
            "seconds": round(time.time() - t.started, 1), "evals": t.log.evals,
        }
        write_text(folder / "result.json", json.dumps(result, indent=1))
        self.trainer.done()
        return result
