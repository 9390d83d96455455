"""The `learned` method: a mask trained by gradient descent over frozen weights (Piggyback, Mallya
et al. 2018; edge-popup, Ramanujan et al. 2020).

One real-valued score per prunable weight, started at |w|; the forward
pass keeps the weights whose scores are not among the k lowest (a global top-k at the exact count, the
weights already zero in the base never counted), and the backward pass hands the scores the gradient
they would get if the mask were continuous (the straight-through estimator: the weight times the
upstream gradient). Adam moves the scores; no weight ever changes.

A schedule of increasing counts (the curve's points) is trained in turn, each for its share of the
epochs and starting from the previous count's scores, so one run records the whole curve; each count
is evaluated and logged like a greedy step, so `write_results`, the curves and `verify` work unchanged.

The state (scores, Adam's moments, the position in the schedule and in the data stream, the log) is
written atomically to the run folder every CHUNK batches and at every count, and the data order is a
function of the seed alone, so a resumed run ends at the same mask as an uninterrupted one.

Under torchrun every rank draws the same batches (the stream depends on the seed alone) and trains on
its slice of each (samples rank, rank+world, ...): its loss is the sum of its samples' losses over the
whole batch's size, and the scores' gradients and the training loss are all-reduced (summed), so every
rank holds the gradient of the full batch's mean loss, Adam takes the same step everywhere and the
scores stay identical across ranks. Evaluation deals the batches to the ranks as the loop's does; rank 0
alone writes the state file and log.jsonl, the others keep the same state in memory. One process
computes exactly what it always did (the batch's mean loss, nothing reduced); the ranks' sums are
added in another order than one process adds them, so their scores agree with one process's to float
rounding (~1e-7 relative), not to the bit, and a weight whose score ties the count's threshold within
that may fall on the other side of it.

--compile is not applied to the training passes: their weights are new tensors every batch, which a
compiled module would take as new inputs anyway; evaluation runs the plain module as written by
FlatWeights.
"""

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.func import functional_call
from torch.utils.data import Subset
from tqdm.auto import tqdm

from connectome.data import batches
from connectome.data.augment import TrainingViews
from connectome.data.tensors import ImageTensors
from connectome.distributed import all_reduce_, is_main, rank_and_size
from connectome.errors import ConnectomeError
from connectome.io import mark_folder, read_metadata, save_state
from connectome.pruning.methods.base import RunFolder, schedule
from connectome.pruning.registry import METHODS
from connectome.pruning.setup import Runtime, Setup
from connectome.pruning.state import FILE, LoopState, check_settings

KIND = "learned/1"  # the state file's "kind": a greedy-loop state has none
CHUNK = 50  # batches between saved states: at most this much training is repeated after a kill


# The scores start at |w| on one scale for every tensor, so the first mask is exactly global magnitude's
# (measured against each tensor's |w| rescaled to the global mean on LeNet-300-100, 4,000 decision images,
# 90% removed in 3 counts: acceptance loss 0.466 against 0.645). No global factor: Adam's steps do not depend
# on the gradient's scale, so a factor would only change the unit of the learning rate, and this keeps the
# unit (weight units) in which the field note measured 1e-4.
def initial_scores(flat) -> torch.Tensor:
    """|w|, in float32 whatever the weights' dtype: Adam's steps of 1e-4 would vanish in bf16."""
    return flat.base.detach().abs().float().clone()


@METHODS.register
class Learned(RunFolder):
    """A learned-mask run in a folder. `counts`: the schedule (default: `learn_points` even steps up to
    the target; compare passes its grid). `chunk`: batches between saved states."""

    name = "learned"
    settings = ("learn_lr", "learn_epochs", "learn_points", "learn_select", "learn_check", "learn_patience",
                "learn_distill", "learn_accept", "learn_restart", "learn_augment")

    def __init__(self, setup: Setup, out: Path, resume: bool = False, runtime: Runtime | None = None,
                 on_step=None, counts: list[int] | None = None, chunk: int = CHUNK):
        super().__init__(setup, out, runtime, on_step)
        self.chunk = max(1, int(chunk))
        self.counts = list(counts) if counts else schedule(setup.target, self.s.learn_points)
        if any(b <= a for a, b in zip(self.counts, self.counts[1:])) or self.counts[-1] > self.prunable:
            raise ConnectomeError(f"the learned schedule must increase and stay within the {self.prunable:,} "
                                  f"prunable weights: {self.counts}")
        self.module.eval()  # BatchNorm on its running statistics, dropout off, throughout
        for p in self.module.parameters():  # frozen: gradients reach the scores only
            p.requires_grad_(False)
        n = len(setup.decision)
        self.per_epoch = math.ceil(n / self.s.batch_size)
        self.total = max(len(self.counts), math.ceil(self.s.learn_epochs * self.per_epoch))
        self.scores = initial_scores(self.flat).requires_grad_(True)
        self.opt = torch.optim.Adam([self.scores], lr=self.s.learn_lr)
        # Position: counts recorded so far, batches trained so far (over the whole schedule), and the
        # sums of the current count's training objective.
        self.pos = {"point": 0, "batch": 0, "train_sum": 0.0, "train_n": 0, "elapsed": 0.0}
        # --learn-select: the current count's best acceptance so far (loss, top-1), the batch of its last
        # check, and the checks since it last improved. The best scores themselves are `self.best`.
        self.select = self.s.learn_select
        self.every = max(1, round(self.s.learn_check * self.per_epoch))  # batches between two checks
        augment = self.s.learn_augment
        if augment is None:  # photographs at full size; small digit and CIFAR tensors are trained without crops
            augment = setup.splits.source.photographs
        self.views = TrainingViews() if augment else None
        if self.select:
            self.pos.update(best=None, checked=-1, since=0, trail=[])
        self.best: torch.Tensor | None = None
        self.best_images: torch.Tensor | None = None  # the best's acceptance loss and hit per image (paired)
        self.log: list[dict] = []
        self._open(resume)

    @classmethod
    def for_grid(cls, setup, folder, counts, runtime):
        """Trained through the grid's counts in turn, each recorded on the way."""
        return cls(replace(setup, target=counts[-1]), folder, resume=True, runtime=runtime, counts=counts)

    @classmethod
    def work(cls, s, decide, accept, evals, target, prunable):
        """learn_epochs passes over the decision split, a measurement at every count and the dense model,
        and with learn_select the acceptance checks: a count is checked at its first batch and every
        learn_check epochs, and stops no sooner than learn_patience checks after its first (as `run`)."""
        points = min(s.learn_points, target) if target else s.learn_points  # the schedule's distinct counts
        total, how = (s.learn_epochs * decide + (points + 1) * (accept + evals),
                      f"learn_epochs {s.learn_epochs:g} x {decide:,} decision samples + {points + 1:,} "
                      f"measurements of {accept + evals:,}")
        if s.learn_select:
            per_epoch = math.ceil(decide / s.batch_size)
            share = max(points, math.ceil(s.learn_epochs * per_epoch)) // points  # a count's batches, at least
            every = max(1, round(s.learn_check * per_epoch))
            checks = points * min(s.learn_patience + 1, math.ceil(share / every))
            total += checks * accept
            how += f" + {checks:,} acceptance checks of {accept:,}"
        return total, how

    @property
    def elapsed(self) -> float:
        return self.pos["elapsed"]

    @elapsed.setter
    def elapsed(self, seconds: float) -> None:
        self.pos["elapsed"] = seconds

    # --- the masked forward -----------------------------------------------------------------------

    @torch.no_grad()
    def hard_mask(self, k: int) -> torch.Tensor:
        """Kept weights: all but the k eligible ones of lowest score (exactly k removed)."""
        mask = torch.ones_like(self.flat.mask)
        if k:
            s = self.scores.detach().masked_fill(~self.flat.eligible, math.inf)
            if self.setup.pattern is None:
                mask[torch.topk(s, k, largest=False, sorted=False).indices] = False
            else:  # the lowest scores that fit the N:M groups (a full sort: slower, same straight-through)
                mask[self.setup.pattern.lowest(s, self.flat, self.flat.eligible, mask)[:k]] = False
        return mask

    def _loss(self, x, y, k: int) -> torch.Tensor:
        """The batch's mean loss; under torchrun, this rank's share of it: the sum of the losses of its
        slice of the batch over the whole batch's size (the ranks' shares add up to the mean)."""
        flat = self.flat
        rank, world = rank_and_size()
        n = len(y)
        if world > 1:
            x, y = x[rank::world], y[rank::world]
        # Straight-through: the value is the hard mask exactly (s - s.detach() is 0.0), the derivative
        # with respect to the scores is 1, so d loss/d score = w * d loss/d (masked w).
        ste = self.hard_mask(k).to(self.scores.dtype) + self.scores - self.scores.detach()
        masked = (flat.base * ste).to(flat.base.dtype)
        # A functional forward rather than FlatWeights.write: the masked weights must stay in the
        # autograd graph of the scores, and writing them into the Parameters would need gradients on
        # the Parameters themselves. The module's own tensors are never touched while training.
        rt = self.rt
        with torch.autocast(device_type=torch.device(self.setup.device).type, dtype=rt.autocast_dtype,
                            enabled=rt.autocast_dtype is not None):
            logits = functional_call(self.module, flat.split(masked), (x,))
        a = self.s.learn_distill
        if not a:
            if world > 1:
                return F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=self.s.label_smoothing) / n
            return F.cross_entropy(logits.float(), y, label_smoothing=self.s.label_smoothing)
        logits = logits.float()
        per = F.cross_entropy(logits, y, reduction="none", label_smoothing=self.s.label_smoothing)
        # The dense model's predictions on the same views: what the mask must keep, beyond the labels.
        with torch.no_grad(), torch.autocast(device_type=torch.device(self.setup.device).type,
                                             dtype=rt.autocast_dtype, enabled=rt.autocast_dtype is not None):
            teacher = functional_call(self.module, flat.split(flat.base), (x,)).float().log_softmax(1)
        kl = F.kl_div(logits.log_softmax(1), teacher, reduction="none", log_target=True).sum(1)
        return ((1 - a) * per + a * kl).sum() / n

    # --- data: a deterministic stream of batches, from any position ---------------------------------

    def _stream(self, start: int):
        """Batches `start`, `start`+1, ... of an endless sequence of epochs, each a permutation of the
        decision split seeded by (seed, epoch): the same batches whatever batch a run resumes at."""
        data, bs = self.setup.decision, self.s.batch_size
        epoch, skip = divmod(start, self.per_epoch)
        b = start  # the absolute index of the next batch
        while True:
            gen = torch.Generator().manual_seed(self.s.seed * 1_000_003 + epoch)
            rest = torch.randperm(len(data), generator=gen)[skip * bs:]
            part = data.subset(rest) if isinstance(data, ImageTensors) else Subset(data, rest.tolist())
            for x, y in batches(part, bs, workers=self.rt.workers_for(data), device=self.setup.device):
                if self.views is not None:  # the views of batch b depend on (seed, b) alone
                    x = self.views(x, self.s.seed * 1_000_003 + b)
                b += 1
                if self.rt.channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, y
            epoch, skip = epoch + 1, 0

    def _span(self, point: int) -> tuple[int, int]:
        """The batches of the schedule's count `point`: an equal share of the epochs."""
        n = len(self.counts)
        return self.total * point // n, self.total * (point + 1) // n

    # --- the run ------------------------------------------------------------------------------------

    def _due(self, point: int) -> bool:
        """An acceptance check is due at the count's first batch and every `every` batches after it."""
        first = self._span(point)[0]
        b = self.pos["batch"]
        return b > self.pos["checked"] and (b - first) % self.every == 0

    def _check(self, k: int) -> None:
        """The current scores' mask at k on the acceptance split; kept as the count's best where neither
        its loss nor its top-1 is worse and one is better (a lower loss bought with fewer correct images
        is how memorising the decision split shows); otherwise one more check without improvement."""
        pos = self.pos
        self._apply(k)
        paired = self.s.learn_accept == "paired"
        m = self._eval(self.setup.accept, "acceptance check", keep_per_sample=paired)
        if pos["best"] is None and pos["point"] > 0 and self.s.learn_restart:
            m = self._restart_if_better(k, m, paired)
        pos["trail"].append([pos["batch"], round(m.loss, 5), round(m.top1, 3)])  # logged with the count
        best = pos["best"]
        if best is None or (self._paired_better(m) if paired else
                            (m.loss <= best[0] and m.top1 >= best[1] and (m.loss, m.top1) != tuple(best))):
            pos.update(best=[m.loss, m.top1], since=0)
            self.best = self.scores.detach().clone()
            if paired:
                self.best_images = torch.stack([m.per_sample.double().cpu(), m.per_correct.double().cpu()])
        else:
            pos["since"] += 1
        pos["checked"] = pos["batch"]
        if is_main():
            self._save()

    def _restart_if_better(self, k: int, m, paired: bool):
        """A count's start: the previous count's scores, or global magnitude's (the scores' own start) where
        its mask at this count is better on the acceptance images (more correct, or as many at a lower
        loss). Scores trained for a smaller count rank the weights past that count's boundary by whatever
        Adam did to them there: cut deeper, they can start a count far below magnitude's nested mask."""
        kept = self.scores.detach().clone()
        with torch.no_grad():
            self.scores.copy_(initial_scores(self.flat))
        self._apply(k)
        start = self._eval(self.setup.accept, "acceptance check", keep_per_sample=paired)
        if (start.top1, -start.loss) > (m.top1, -m.loss):
            self.opt.state.clear()  # the moments belong to the scores abandoned
            self.pos["trail"].append(["magnitude", round(start.loss, 5), round(start.top1, 3)])
            return start
        with torch.no_grad():
            self.scores.copy_(kept)
        self._apply(k)
        return m

    def _paired_better(self, m) -> bool:
        """Better than the count's best on the same acceptance images, image by image: the loss lower by
        more than one standard error of the paired difference, and top-1 not lower by more than one. One
        image of 160 is 0.6 points of top-1: a rule on the two means alone refuses any lower loss that
        costs a single image, and accepts any noise that gains one."""
        def upper(d):  # the mean difference plus one standard error
            return d.mean().item() + (d.std().item() / math.sqrt(len(d)) if len(d) > 1 else 0.0)
        ref_loss, ref_hit = self.best_images
        return (upper(m.per_sample.double().cpu() - ref_loss) < 0  # lower loss, beyond one standard error
                # top-1 lower by no more than one (one image lost alone is exactly one: not refused by rounding)
                and upper(m.per_correct.double().cpu() - ref_hit) >= -1e-9)

    def _apply(self, k: int) -> None:
        """The count's hard mask into the model (what is evaluated, and written as the result)."""
        self.flat.mask = self.hard_mask(k)
        self.flat.write()

    def run(self, target: int | None = None, max_chunks: int | None = None) -> list[dict]:
        """Train and record every count of the schedule up to `target` (default: the last). With
        `max_chunks`, return after saving that many chunks (a stop a resume continues from)."""
        target = self.counts[-1] if target is None else target
        if target not in self.counts:
            raise ConnectomeError(f"{target:,} is not a count of the learned schedule {self.counts}")
        pos = self.pos
        start = self._begin()
        if not self.log:
            self.flat.reset()
            self._record_dense(self._eval(self.setup.accept, "acceptance"), start)
        last = self.counts.index(target)
        bar = tqdm(total=self._span(last)[1], initial=pos["batch"], desc="learned mask", unit="batch",
                   disable=not self.rt.progress or not is_main())
        stream, chunks = None, 0
        while pos["point"] <= last:
            i = pos["point"]
            k = self.counts[i]
            end = self._span(i)[1]
            while pos["batch"] < end:
                if self.select and self._due(i):
                    self._check(k)
                if self.select and pos["since"] >= self.s.learn_patience:  # acceptance stopped improving:
                    pos.update(batch=end, checked=end)  # the rest of the count's share is skipped
                    stream = None
                    bar.update(end - bar.n)
                    break
                stream = stream or self._stream(pos["batch"])
                x, y = next(stream)
                self.opt.zero_grad(set_to_none=True)
                loss = self._loss(x, y, k)
                loss.backward()
                if rank_and_size()[1] > 1:  # the full batch's gradient and loss on every rank: the same step
                    if self.scores.grad is None:  # a rank whose slice is empty (a batch smaller than the world)
                        self.scores.grad = torch.zeros_like(self.scores)
                    loss = loss.detach().clone()
                    all_reduce_(self.scores.grad, loss)
                self.opt.step()
                pos["batch"] += 1
                pos["train_sum"] += float(loss.detach())
                pos["train_n"] += 1
                bar.update(1)
                if pos["batch"] % self.chunk == 0 and pos["batch"] < end:
                    pos["elapsed"] = time.time() - start
                    if is_main():
                        self._save()
                    chunks += 1
                    if max_chunks is not None and chunks >= max_chunks:
                        bar.close()
                        return self.log
            if self.select:
                if pos["checked"] < end:  # the scores at the end of the share are a candidate too
                    self._check(k)
                with torch.no_grad():
                    self.scores.copy_(self.best)  # the next count starts from this count's best
            self._apply(k)
            acc, ev = self._eval(self.setup.accept, "acceptance"), self._eval(self.setup.evaluation, "evaluation")
            prev = self.counts[i - 1] if i else 0
            train = pos["train_sum"] / pos["train_n"] if pos["train_n"] else None
            trained = pos["train_n"]  # fewer than the count's share where acceptance stopped it
            pos.update(point=i + 1, train_sum=0.0, train_n=0)
            trail = pos.get("trail")
            if self.select:
                pos.update(best=None, checked=-1, since=0, trail=[])
            self._record({"step": i + 1, "phase": "learned", "accepted": True, "removed": self.flat.removed(),
                          "restored": 0, "size": k - prev, "batches": trained, "train_loss": train,
                          **({"checks": trail} if trail else {}),
                          **acc.as_dict("accept_"), **ev.as_dict("eval_")}, start)
            bar.set_postfix(removed=k, top1=f"{acc.top1:.2f}", loss=f"{acc.loss:.4f}")
        bar.close()
        if pos["point"] > last:
            self._apply(target)  # also after a resume of a finished run: the model holds its mask
        return self.log

    # --- the state file -------------------------------------------------------------------------------

    def _save(self) -> None:
        adam = self.opt.state.get(self.scores, {})
        tensors = {"scores": self.scores.detach()}
        if self.best is not None:
            tensors["best_scores"] = self.best
        if self.best_images is not None:
            tensors["best_images"] = self.best_images
        if adam:
            tensors.update(exp_avg=adam["exp_avg"], exp_avg_sq=adam["exp_avg_sq"],
                           adam_step=torch.as_tensor(adam["step"], dtype=torch.float32).reshape(1))
        pos = self.pos
        # "loop" is a LoopState's record too, so that watchers (LoopState.read) follow a learned run alike.
        watched = LoopState(size=0, step_index=pos["point"], target=self.counts[-1], prunable=self.prunable,
                            elapsed=pos["elapsed"])
        loop = {**pos, "counts": self.counts, **watched.record()}
        meta = {"kind": KIND, "settings": json.dumps(asdict(self.s), sort_keys=True), "digest": self.s.digest(),
                "loop": json.dumps(loop), "log": json.dumps(self.log)}
        mark_folder(self.out)  # a run started from the library is a run folder too: --resume takes it
        save_state(self.out / FILE, tensors, meta)

    def _load(self, path: Path) -> None:
        try:
            meta = read_metadata(path)
            tensors = load_file(str(path))
        except Exception:
            raise ConnectomeError(f"{path}: the run state is unreadable (truncated or not a safetensors file): "
                                  f"choose another --out") from None
        if meta.get("kind") != KIND:
            raise ConnectomeError(f"{path} holds a greedy-loop run, not a learned one: choose another --out")
        check_settings(meta, self.s, path)
        loop = json.loads(meta["loop"])
        if loop["counts"] != self.counts:
            raise ConnectomeError(f"{path}: the run was started with the counts {loop['counts']}, not {self.counts}")
        self.pos = {k: loop.get(k, v) for k, v in self.pos.items()}  # keys added since the state was written: their start values
        self.log = json.loads(meta["log"])
        device = self.scores.device
        with torch.no_grad():
            self.scores.copy_(tensors["scores"].to(device))
        if "best_scores" in tensors:
            self.best = tensors["best_scores"].to(device)
        if "best_images" in tensors:
            self.best_images = tensors["best_images"]
        if "exp_avg" in tensors:
            sd = self.opt.state_dict()
            sd["state"] = {0: {"step": tensors["adam_step"].reshape(()), "exp_avg": tensors["exp_avg"].to(device),
                               "exp_avg_sq": tensors["exp_avg_sq"].to(device)}}
            self.opt.load_state_dict(sd)
        point = self.pos["point"]
        if point:  # the model holds the last recorded count's mask
            self._apply(self.counts[point - 1])
