"""One step of the loop as small functions: which weights to zero (or restore), what the quadratic
model predicts for the step, and whether the measured change on the acceptance split allows it.

The loss change of zeroing a weight w, to second order with a diagonal curvature F, is
-g*w + 1/2*F*w^2; of restoring a zeroed weight to w0, g*w0 + 1/2*F*w0^2. Steps are predicted with
these sums whatever the criterion ranks by, so every criterion gets the same step control.
"""

import math

import torch

from connectome.distributed import all_reduce_
from connectome.pruning import criteria
from connectome.pruning.flat import FlatWeights


def choose_removals(flat: FlatWeights, criterion, stats, k: int, generator: torch.Generator) -> torch.Tensor:
    """The k surviving weights of lowest score; weights deferred earlier only when too few others remain."""
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=flat.base.device)
    w = flat.split(flat.base)
    scores = flat.cat({n: criterion.scores(n, w[n], stats, generator) for n in flat.names}).float()
    available = flat.mask & flat.eligible
    fresh = available & ~flat.deferred
    pool = fresh if int(fresh.sum()) >= k else available  # deferral yields when too few are left
    scores = scores.masked_fill(~pool, math.inf)
    return torch.topk(scores, k, largest=False, sorted=False).indices


def choose_restores(flat: FlatWeights, stats, k: int) -> torch.Tensor:
    """Up to k zeroed weights whose restoration is predicted to lower the loss most."""
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=flat.base.device)
    w = flat.split(flat.base)
    gain = flat.cat({n: criteria.predicted_restore(w[n], stats, n) for n in flat.names})
    gain = gain.masked_fill(flat.mask | ~flat.eligible | (gain >= 0), math.inf)  # only predicted gains
    k = min(k, int(torch.isfinite(gain).sum()))
    return torch.topk(gain, k, largest=False, sorted=False).indices if k else gain.new_empty(0, dtype=torch.long)


def predicted(flat: FlatWeights, stats, removed_idx, restored_idx) -> tuple[float, float] | tuple[None, None]:
    """The step's predicted loss change, and its curvature part sum(1/2*F*w^2), always >= 0, which
    sets the scale of the step's acceptable surprise."""
    if stats is None:
        return None, None
    g, f = flat.cat(stats.grad), flat.cat(stats.second)
    idx = torch.cat([removed_idx, restored_idx])
    sign = torch.cat([-torch.ones_like(removed_idx), torch.ones_like(restored_idx)]).to(g.dtype)
    w = flat.base[idx]
    curvature = (0.5 * f[idx] * w * w).double().sum()
    return float((sign * g[idx] * w).double().sum() + curvature), float(curvature)


def paired_stderr(after, before) -> float:
    """Standard error of the measured change, from the per-sample differences of all ranks."""
    diff = after.per_sample - before.per_sample
    sums = torch.stack([diff.sum(), (diff * diff).sum(), diff.new_tensor(len(diff))])
    all_reduce_(sums)
    d1, d2, n = sums.tolist()
    return max(0.0, (d2 - d1 * d1 / n) / max(n - 1, 1)) ** 0.5 / n ** 0.5


def acceptable(actual: float, prediction: float | None, curvature: float | None, stderr: float, budget: float,
               tolerance: float) -> bool:
    """A step is kept while its measured change stays within the prediction plus a surprise allowance:
    a share of the curvature term, twice the measurement's noise, and the step's share of the budget."""
    return prediction is None or actual <= prediction + tolerance * curvature + 2 * stderr + budget
