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

On request (`input_norms=True`, for criteria that declare `needs_input_norms`), the same pass also
measures the norm of every weight's input over the calibration set, as Wanda (Sun et al. 2023) ranks by
(see `InputNorms`); without the request nothing is hooked and the statistics are unchanged to the bit.
"""

import contextlib
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
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
    # Per weight, the norm of its input over the calibration set, sqrt(sum of x^2 / samples) (InputNorms),
    # float32, the weight's shape; None unless collect was asked for it.
    input_norm: dict[str, torch.Tensor] | None = None

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


class InputNorms:
    """Sums of squared inputs of the prunable modules, gathered by forward pre-hooks during a pass.

    Wanda scores a weight W[o, j] of a linear layer by |W[o, j]| * ||X_j||, the norm of input j over all
    calibration tokens: exactly ||dY_o||, the change of output o over the calibration set when that
    weight is zeroed. Its reference code (locuslab/wanda, lib/layerwrapper.py WrappedGPT.add_batch) keeps
    scaler_row[j] = sum of X_j^2 / nsamples, nsamples counting sequences, and scores with its square root;
    here a sample is an image, so norm = sqrt(sum over samples and positions of x^2 / samples). The
    division is the same for every layer, so it changes no ranking, global or per row.

    Convolutions: the reference code prunes nn.Linear only (its image classifiers leave the stem,
    downsampling and depthwise convs dense), so it gives no rule. A conv is the linear layer W[o, (c, i, j)]
    over unfolded input patches, and the same definition (the one where the score is ||dY_o||) gives a
    norm per tap: tap (c, i, j) of output channel o multiplies input channel g*in/groups + c (g the group of
    o) at offset (i*dilation - padding, j*dilation - padding) from position*stride, so its norm runs over
    exactly those input values, over every output position and sample, padded values included. That is
    what is kept, per input channel and tap: [in_channels, *kernel_size], expanded to the weight's shape
    through the groups (a depthwise conv's output channel o reads input channel o alone). The norm of a
    whole input channel broadcast over the taps differs from it only at the borders (the padding, and
    rows a stride skips), little for stride-1 3x3 convs, more for the strided ones and large kernels.
    Per batch: the squares summed over the batch, then one strided sum per tap, accumulated in float64."""

    def __init__(self, module: nn.Module, params: dict[str, nn.Parameter], device):
        owners = {id(p): name for name, p in params.items()}
        self.modules: dict[str, list[nn.Module]] = {}  # a tied weight has several
        for mod in module.modules():
            name = owners.get(id(getattr(mod, "weight", None)))
            if name is None:
                continue
            if not isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)) or getattr(mod, "transposed", False):
                raise ValueError(f"input norms: {name} belongs to a {type(mod).__name__}, not a Linear or Conv")
            self.modules.setdefault(name, []).append(mod)
        missing = [n for n in params if n not in self.modules]
        if missing:
            raise ValueError(f"input norms: no Linear or Conv module of {module.__class__.__name__} owns "
                             f"{', '.join(missing)}")
        self.params = params
        self.shapes = {n: self._compact_shape(self.modules[n][0]) for n in params}
        sizes = [torch.Size(self.shapes[n]).numel() for n in params]
        # The sums of squares, then one count of calls per tensor: one vector, all-reduced like s1 and s2.
        self.flat = torch.zeros(sum(sizes) + len(params), dtype=torch.float64, device=device)
        *parts, self.calls = self.flat.split(sizes + [len(params)])
        self.views = {n: t.view(self.shapes[n]) for n, t in zip(params, parts)}
        self.handles = []

    @staticmethod
    def _compact_shape(mod: nn.Module) -> tuple[int, ...]:
        if isinstance(mod, nn.Linear):
            return (mod.in_features,)
        return (mod.in_channels, *mod.kernel_size)

    @contextlib.contextmanager
    def hooked(self):
        try:
            for i, name in enumerate(self.params):  # calls[i] counts the i-th tensor's module calls
                for mod in self.modules[name]:
                    self.handles.append(mod.register_forward_pre_hook(self._hook(self.views[name], self.calls[i])))
            yield self
        finally:
            for h in self.handles:
                h.remove()
            self.handles.clear()

    def _hook(self, acc: torch.Tensor, calls: torch.Tensor):
        def hook(mod, args):
            x = args[0].detach()
            with torch.no_grad():
                acc.add_(linear_input_squares(x) if isinstance(mod, nn.Linear) else conv_input_squares(mod, x))
                calls.add_(1)
        return hook

    def per_weight(self, samples: int) -> dict[str, torch.Tensor]:
        """sqrt(sum of squares / samples) of every weight's input, in the weight's shape, float32. A weight
        whose module never ran (used functionally, as nn.MultiheadAttention uses its out_proj) would read
        as having no input, free to remove: refused instead (after the all-reduce: every rank agrees)."""
        silent = [n for n, c in zip(self.params, self.calls.tolist()) if c == 0]
        if silent:
            raise ValueError(f"input norms: the modules of {', '.join(silent)} never ran in the forward pass "
                             "(their weights are used some other way): exclude them from pruning")
        out = {}
        for name, compact in self.views.items():
            norm = (compact / samples).sqrt().float()
            shape, mod = self.params[name].shape, self.modules[name][0]
            if isinstance(mod, nn.Linear):
                out[name] = norm.expand(shape).contiguous()
            else:  # [in_channels, *k] -> [out, in/groups, *k]: output channel o reads its group's channels
                g = mod.groups
                grouped = norm.view(g, 1, *shape[1:]).expand(g, shape[0] // g, *shape[1:])
                out[name] = grouped.reshape(shape).contiguous()
        return out


def _sum_leading(sq: torch.Tensor, keep: int) -> torch.Tensor:
    """Sum over all but the last `keep` dimensions, in float64 (sum(dim=()) would sum over all)."""
    lead = tuple(range(sq.dim() - keep))
    return sq.sum(dim=lead, dtype=torch.float64) if lead else sq.double()


def linear_input_squares(x: torch.Tensor) -> torch.Tensor:
    """Per input feature, the sum of x^2 over every other dimension (batch, tokens), float64."""
    return _sum_leading(x.float().square(), 1)


def conv_input_squares(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per input channel and kernel tap, the sum of x^2 over the inputs that tap multiplies: every
    output position of every sample (see InputNorms). [in_channels, *kernel_size], float64."""
    nd = len(mod.kernel_size)
    sq = _sum_leading(x.float().square(), nd + 1)  # [C, *spatial]
    pad = mod._reversed_padding_repeated_twice  # what the conv pads with, "same" resolved
    if any(pad):  # the square of a padded input is the padded square, reflect and circular modes too
        sq = F.pad(sq, list(pad), mode="constant" if mod.padding_mode == "zeros" else mod.padding_mode)
    k, stride, dil = mod.kernel_size, mod.stride, mod.dilation
    positions = [(sq.shape[1 + d] - dil[d] * (k[d] - 1) - 1) // stride[d] + 1 for d in range(nd)]
    out = sq.new_empty((sq.shape[0], *k))
    spatial = tuple(range(1, nd + 1))
    for tap in itertools.product(*(range(n) for n in k)):
        window = tuple(slice(dil[d] * t, dil[d] * t + stride[d] * (positions[d] - 1) + 1, stride[d])
                       for d, t in enumerate(tap))
        out[(slice(None), *tap)] = sq[(slice(None), *window)].sum(dim=spatial)
    return out


def collect(model: torch.nn.Module, params: dict[str, torch.nn.Parameter], dataset, batch_size: int = 128,
            device="cpu", label_smoothing: float = 0.0, autocast_dtype=None, progress: bool = False,
            workers: int = 0, channels_last: bool = False, input_norms: bool = False) -> GradStats:
    """Statistics of the model as it is (eval mode: BatchNorm uses running statistics, dropout is off,
    exactly the network whose loss the pruning changes). `model` may be a torch.compile'd wrapper of
    the module that owns `params`. `input_norms`: also measure each weight's input norm (GradStats.input_norm),
    in the same pass; a compiled wrapper then runs its module uncompiled, since hooks added after
    compilation are not run by the compiled code."""
    norms = None
    if input_norms:
        model = getattr(model, "_orig_mod", model)
        norms = InputNorms(model, params, device)
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
    with only_grads_for(model, params), (norms.hooked() if norms else contextlib.nullcontext()):
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
    all_reduce_(s1, s2, totals, *([norms.flat] if norms else []))
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
                     100.0 * totals[3].item() / n, norms.per_weight(n) if norms else None)
