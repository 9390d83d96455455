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
reorder near-tied scores). The gradients of all tensors are flattened into one vector (one copy in C++),
cast once and added by two kernels, so the cost per batch does not grow with the number of tensors
(a mixed-dtype addcmul per tensor cost 3x the backward pass of LeNet).
Under torch.distributed the two sums are all-reduced, so every rank ends with identical statistics.
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from connectome.data.datasets import batches
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
            device="cpu", label_smoothing: float = 0.0, autocast_dtype=None, progress: bool = False,
            workers: int = 0, channels_last: bool = False) -> GradStats:
    """Statistics of the model as it is (eval mode: BatchNorm uses running statistics, dropout is off,
    exactly the network whose loss the pruning changes). `model` may be a torch.compile'd wrapper of
    the module that owns `params`."""
    names = list(params)
    plist = [params[n] for n in names]
    numel = sum(p.numel() for p in plist)
    s1 = torch.zeros(numel, dtype=torch.float64, device=device)  # flat, in the logical order of each tensor
    s2 = torch.zeros_like(s1)

    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct
    samples = steps = 0  # counted on the host: a Python number copied to a GPU each batch would synchronise it
    was_training = model.training
    model.eval()
    device_type = torch.device(device).type
    rank, world = rank_and_size()  # each rank takes every world-th batch; all-reduce makes the sums global
    bar = tqdm(total=len(dataset), desc="statistics", unit="img", disable=not progress or rank, leave=False)
    with only_grads_for(model, params):
        for x, y in batches(dataset, batch_size, shard=(rank, world), workers=workers, device=device):
            bar.update(len(y) * world)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(x)
            logits = logits.float()
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            grads = torch.autograd.grad(loss, plist)
            b = len(y)
            # flatten_dense_tensors copies every gradient (channels_last ones too) in logical order, in C++.
            g = torch._C._nn.flatten_dense_tensors(grads).double()
            s1.add_(g, alpha=b)
            s2.addcmul_(g, g, value=b)
            with torch.no_grad():
                plain = loss if label_smoothing == 0 else F.cross_entropy(logits, y)
                sums += torch.stack([plain.double() * b, (logits.argmax(1) == y).sum().double()])
            samples, steps = samples + b, steps + 1
    bar.close()
    model.train(was_training)
    totals = torch.cat([sums.new_tensor([samples, steps]), sums])  # samples, batches, loss sum, correct
    all_reduce_(s1, s2, totals)
    n, k = totals[0].item(), totals[1].item()
    if k < 2:
        raise ValueError(f"statistics need at least 2 batches, got {int(k)}: use more samples or a smaller batch")
    mean = s1 / n
    var = ((s2 - s1 * mean) / (k - 1)).clamp_(min=0)
    second = (mean * mean - var / n + var).clamp_(min=0)
    sizes, shapes = [p.numel() for p in plist], [p.shape for p in plist]

    def per_tensor(flat: torch.Tensor) -> dict[str, torch.Tensor]:  # views of one float32 vector
        return {name: t.view(shape) for name, t, shape in zip(names, flat.float().split(sizes), shapes)}

    return GradStats(per_tensor(mean), per_tensor(second), per_tensor(var), int(n), totals[2].item() / n,
                     100.0 * totals[3].item() / n)
