"""One pass of gradient statistics over a calibration set.

Per prunable weight: the mean gradient g of the per-sample loss, and the per-sample second moment
E[g_i^2], the diagonal Fisher that OBD-style criteria need. Squared mini-batch gradients estimate
g^2 + var/B, too small by about the batch size B; so the batch means are treated as samples of size B:
with S1 = sum_k B_k g_k, S2 = sum_k B_k g_k^2 over K batches of N samples in all,
    var = (S2 - S1^2/N) / (K - 1)          (unbiased: E[S2] = N g^2 + K var, E[S1^2/N] = N g^2 + var)
    E[g_i^2] = g^2 + var,   with g^2 estimated by (S1/N)^2 - var/N.
That costs two fused multiply-adds per weight and batch, not a per-sample backward pass.
Sums are kept in float64: deterministic for a given data order, no cancellation in S2 - S1^2/N, and the
same to ~1e-16 however the batches are dealt to ranks (float32 partial sums differ at 1e-7, enough to
reorder near-tied scores). Gradients are cast once, then fused foreach kernels add them (a mixed-dtype
addcmul per tensor cost 3x the backward pass of LeNet).
Under torch.distributed every sum is all-reduced, so every rank ends with identical statistics.
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from connectome.data import batches
from connectome.distributed import all_reduce_, rank_and_size


@dataclass
class GradStats:
    grad: dict[str, torch.Tensor]  # mean gradient, float32
    second: dict[str, torch.Tensor]  # per-sample second moment E[g_i^2], float32
    variance: dict[str, torch.Tensor]  # per-sample variance of the gradient, float32
    samples: int
    loss: float  # mean plain cross-entropy of the model on the pass
    top1: float  # percent

    def stderr(self, name: str) -> torch.Tensor:
        """Standard error of the mean gradient."""
        return (self.variance[name] / self.samples).sqrt()


@contextlib.contextmanager
def only_grads_for(model: torch.nn.Module, params: dict[str, torch.nn.Parameter]):
    """Backward computes gradients for the prunable parameters only (norm layers and biases skip)."""
    wanted = {id(p) for p in params.values()}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in wanted)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def collect(model: torch.nn.Module, params: dict[str, torch.nn.Parameter], dataset, batch_size: int = 128,
            device="cpu", label_smoothing: float = 0.0, autocast_dtype=None, progress: bool = False) -> GradStats:
    """Statistics of the model as it is (eval mode: BatchNorm uses running statistics, dropout is off,
    exactly the network whose loss the pruning changes)."""
    names = list(params)
    plist = [params[n] for n in names]
    s1 = [torch.zeros(p.shape, dtype=torch.float64, device=device) for p in plist]
    s2 = [torch.zeros(p.shape, dtype=torch.float64, device=device) for p in plist]

    totals = torch.zeros(4, dtype=torch.float64, device=device)  # samples, batches, loss sum, correct
    was_training = model.training
    model.eval()
    device_type = torch.device(device).type
    rank, world = rank_and_size()  # each rank takes every world-th batch; all-reduce makes the sums global
    bar = tqdm(total=len(dataset), desc="statistics", unit="img", disable=not progress or rank, leave=False)
    with only_grads_for(model, params):
        for x, y in batches(dataset, batch_size, shard=(rank, world)):
            bar.update(len(y) * world)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device_type=device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            grads = torch.autograd.grad(loss, plist)
            b = len(y)
            grads = [g.double() for g in grads]
            torch._foreach_add_(s1, grads, alpha=b)
            torch._foreach_addcmul_(s2, grads, grads, value=b)
            with torch.no_grad():
                plain = loss if label_smoothing == 0 else F.cross_entropy(logits, y)
                totals += torch.stack([totals.new_tensor(b), totals.new_tensor(1), plain.double() * b,
                                       (logits.argmax(1) == y).sum().double()])
    bar.close()
    model.train(was_training)
    all_reduce_(*s1, *s2, totals)
    n, k = totals[0].item(), totals[1].item()
    if k < 2:
        raise ValueError(f"statistics need at least 2 batches, got {int(k)}: use more samples or a smaller batch")
    grad, second, variance = {}, {}, {}
    for name, a, b in zip(names, s1, s2):
        mean = a / n
        var = ((b - a * mean) / (k - 1)).clamp_(min=0)
        grad[name] = mean.float()
        variance[name] = var.float()
        second[name] = (mean * mean - var / n + var).clamp_(min=0).float()
    return GradStats(grad, second, variance, int(n), totals[2].item() / n, 100.0 * totals[3].item() / n)
