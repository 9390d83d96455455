"""Top-1, top-5 and mean cross-entropy of a model on a dataset."""

import json
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from connectome.data import batches
from connectome.data.fit import forward_checked
from connectome.distributed import all_reduce_, rank_and_size


@dataclass(frozen=True)
class Metrics:
    top1: float  # percent
    top5: float  # percent
    loss: float  # mean plain cross-entropy (no label smoothing)
    samples: int
    objective: float | None = None  # the label-smoothed loss, when one was asked for
    # Per-sample values of the objective, when asked for: paired differences give a step's standard error.
    per_sample: torch.Tensor | None = field(default=None, repr=False, compare=False)
    per_correct: torch.Tensor | None = field(default=None, repr=False, compare=False)  # top-1 hits, likewise
    # Top-1 among the classes present in the evaluated split only (a 10-class subset of ImageNet scored as a
    # 10-way problem): what a user who deploys on those classes reads. None when every class is present.
    top1_present: float | None = None

    def as_dict(self, prefix: str = "") -> dict:
        d = {"top1": self.top1, "top5": self.top5, "loss": self.loss, "samples": self.samples}
        if self.objective is not None:
            d["objective"] = self.objective
        if self.top1_present is not None:
            d["top1_present"] = self.top1_present
        return {prefix + k: v for k, v in d.items()}

    def as_json(self) -> str:
        """Strict JSON: a loss that overflowed (NaN, Infinity) is null, which every JSON reader reads."""
        return json.dumps({k: v if not isinstance(v, float) or math.isfinite(v) else None
                           for k, v in self.as_dict().items()}, allow_nan=False)

    def __str__(self):
        return f"top-1 {self.top1:.2f}%  top-5 {self.top5:.2f}%  loss {self.loss:.4f}  ({self.samples:,} images)"


@torch.no_grad()
def evaluate(model, dataset, batch_size: int = 256, device="cpu", progress: bool = False,
             desc: str = "eval", autocast_dtype=None, label_smoothing: float = 0.0, keep_per_sample: bool = False,
             workers: int = 0, channels_last: bool = False, classes: torch.Tensor | None = None) -> Metrics:
    """Sums are kept in float64 so that the loss does not depend on batch size beyond rounding.
    Under torch.distributed each rank evaluates its share of the batches and the sums are all-reduced;
    `per_sample` then holds this rank's samples only, on the device (no copy to the host per batch,
    and NCCL reduces only device tensors). `classes`: indices of the classes present in `dataset`;
    `top1_present` is then the top-1 over those logits alone."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss, objective, top-1, top-5, present top-1
    if classes is not None:
        classes = torch.as_tensor(classes, dtype=torch.long, device=device)
    samples = 0  # counted on the host: a Python number copied to a GPU each batch would synchronise it
    kept, hits = [], []
    rank, world = rank_and_size()
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress or rank, leave=False)
    for x, y in batches(dataset, batch_size, shard=(rank, world), workers=workers, device=device):
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            try:
                logits = model(x)
            except RuntimeError:
                if not samples:  # the first batch: a model that cannot take the data says so in one line
                    forward_checked(model, x[:1], "the data")
                raise
        logits = logits.float()
        plain = F.cross_entropy(logits, y, reduction="none")
        objective = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing) \
            if label_smoothing else plain
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        if keep_per_sample:
            kept.append(objective.double())
            hits.append((top[:, 0] == y).double())
        present = (classes[logits[:, classes].argmax(dim=1)] == y).sum().double() if classes is not None \
            else plain.new_zeros((), dtype=torch.float64)
        sums += torch.stack([plain.double().sum(), objective.double().sum(), (top[:, 0] == y).sum().double(),
                             (top == y[:, None]).any(dim=1).sum().double(), present])
        samples += len(y)
        bar.update(len(y) * world)
    bar.close()
    model.train(was_training)
    sums = torch.cat([sums, sums.new_tensor([samples])])
    all_reduce_(sums)
    loss, objective, c1, c5, cp, n = sums.tolist()
    if n == 0:
        raise ValueError("evaluate() got an empty dataset")
    return Metrics(100.0 * c1 / n, 100.0 * c5 / n, loss / n, int(n), objective / n if label_smoothing else None,
                   (torch.cat(kept) if kept else sums.new_zeros(0)) if keep_per_sample else None,
                   (torch.cat(hits) if hits else sums.new_zeros(0)) if keep_per_sample else None,
                   100.0 * cp / n if classes is not None else None)
