"""One step of the loop as small functions: which weights to zero (or restore), what the quadratic
model predicts for the step, and the measures the step control (connectome.pruning.control) judges
the measured change on the acceptance split by.

The loss change of zeroing a weight w, to second order with a diagonal curvature F, is
-g*w + 1/2*F*w^2; of restoring a zeroed weight to w0, g*w0 + 1/2*F*w0^2. Steps are predicted with
these sums whatever the criterion ranks by, so every criterion gets the same step control.
"""

import math

import torch

from connectome.distributed import all_reduce_
from connectome.pruning import scores
from connectome.pruning.flat import FlatWeights, rank_within


def unknown(flat: FlatWeights, stats) -> torch.Tensor:
    """Weights whose gradient and second moment are both exactly zero on the calibration data. They
    are not free: a saturated unit (ReLU6 at 6) passes no gradient, yet removing its inputs changes its
    output. Measured on EfficientNet-Lite0: 18,858 such weights, called free by every gradient
    criterion, cost +1.94 in loss as one step. They are ranked after every weight with statistics.
    A weight whose input is zero on every calibration sample (an MNIST border pixel) is free indeed:
    where the pass measured input norms, only weights with a non-zero input count as unknown."""
    blind = (flat.cat(stats.grad) == 0) & (flat.cat(stats.second) == 0)
    if stats.input_norm is not None:
        blind &= flat.cat(stats.input_norm) > 0
    return blind


def ranked_scores(flat: FlatWeights, criterion, stats, generator: torch.Generator,
                  unknown_last: bool = True) -> torch.Tensor:
    """The criterion's score of every prunable weight (lowest goes first), with the weights of
    unknown statistics placed after all others, in order of magnitude."""
    w = flat.split(flat.base)
    scores = flat.cat({n: criterion.scores(n, w[n], stats, generator) for n in flat.names}).float()
    if stats is None or not criterion.needs_statistics or not unknown_last:
        return scores
    blind = unknown(flat, stats)
    if bool(blind.any()):
        known = scores[~blind & torch.isfinite(scores)]
        top = float(known.max()) if known.numel() else 0.0
        scores = torch.where(blind, top + 1 + (1 + abs(top)) * flat.base.abs().float(), scores)
    return scores


def cap_per_unit(candidates: torch.Tensor, units: torch.Tensor, caps: torch.Tensor, k: int) -> torch.Tensor:
    """The first k of `candidates` (in order) taking at most caps[u] weights of any unit u, then, if
    the caps leave fewer than k, the next candidates regardless (a run still ends at its count)."""
    u = units[candidates]
    allowed = rank_within(u) < caps[u]
    chosen = candidates[allowed][:k]
    if len(chosen) < k:
        chosen = torch.cat([chosen, candidates[~allowed][:k - len(chosen)]])
    return chosen


def choose_removals(flat: FlatWeights, criterion, stats, k: int, generator: torch.Generator,
                    unit_share: float | None = None, unknown_last: bool = True, pattern=None) -> torch.Tensor:
    """The k surviving weights of lowest score; weights deferred earlier only when too few others remain.
    With `unit_share`, one step takes at most that share of any output unit's weights: the diagonal
    model treats the nine taps of a depthwise kernel as independent, but removing all of them kills
    the channel (on Lite0 all nine taps of one channel were among a step's first twelve choices).
    With an N:M `pattern`, no group loses more than M-N (a hard bound: fewer than k may come back)."""
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=flat.base.device)
    scores = ranked_scores(flat, criterion, stats, generator, unknown_last)
    available = flat.mask & flat.eligible
    fresh = available & ~flat.deferred
    if pattern is not None:  # every candidate in score order, cut to what the groups may still lose
        chosen = pattern.lowest(scores, flat, fresh)
        if len(chosen) < k:  # deferral yields when too few are left
            chosen = pattern.lowest(scores, flat, available)
        if unit_share:
            units, sizes = flat.units()
            return cap_per_unit(chosen, units, (sizes * unit_share).floor().clamp(min=1).long(), k)
        return chosen[:k]
    pool = fresh if int(fresh.sum()) >= k else available  # deferral yields when too few are left
    scores = scores.masked_fill(~pool, math.inf)
    if not unit_share:
        return torch.topk(scores, k, largest=False, sorted=False).indices
    units, sizes = flat.units()
    caps = (sizes * unit_share).floor().clamp(min=1).long()
    m = min(int(pool.sum()), max(4 * k, k + 1024))  # enough candidates that the caps rarely run out
    candidates = torch.topk(scores, m, largest=False, sorted=True).indices
    return cap_per_unit(candidates, units, caps, k)


def choose_restores(flat: FlatWeights, stats, k: int) -> torch.Tensor:
    """Up to k zeroed weights whose restoration is predicted to lower the loss most."""
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=flat.base.device)
    w = flat.split(flat.base)
    gain = flat.cat({n: scores.predicted_restore(w[n], stats, n) for n in flat.names})
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


def _paired(diff: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of per-sample differences, over the samples of all ranks."""
    sums = torch.stack([diff.sum(), (diff * diff).sum(), diff.new_tensor(len(diff))])
    all_reduce_(sums)
    d1, d2, n = sums.tolist()
    return d1 / n, max(0.0, (d2 - d1 * d1 / n) / max(n - 1, 1)) ** 0.5 / n ** 0.5


def paired_stderr(after, before) -> float:
    """Standard error of the measured change, from the per-sample differences of all ranks."""
    return _paired(after.per_sample - before.per_sample)[1]


def top1_falls(after, before) -> bool:
    """Top-1 on the acceptance split measurably fell (paired: the same images before and after). Such
    a step is no descent, whatever its loss did: on an overconfident network (MobileNetV3-Small on
    Fashion-MNIST) a step of 15,121 weights lowered the acceptance loss 0.491 -> 0.410 by flattening the
    logits while top-1 fell 90.0% -> 85.2%."""
    mean, stderr = _paired(after.per_correct - before.per_correct)
    return mean < -2 * stderr


def pace(log: list[dict], window: int = 3) -> float:
    """The measured loss change per weight of the last `window` kept removal steps (never below 0):
    what the next step's weights are expected to cost, by measurement rather than by the diagonal
    model. Late in a run the model's predicted gains are at the noise level while every step costs a
    steady amount per weight; measured on the demo, steps of 675 weights cost 1.5e-6 per weight and
    were rejected, the retries of 133-270 weights cost 1-4e-6 per weight and were kept: shrinking
    bought nothing but statistics passes. Only a cost that grows faster than the step (the weights of
    one step interacting, or statistics gone stale) says a step is too big. Read from the log, so a
    resumed run computes the same value."""
    kept = [r for r in log if r.get("phase") == "remove" and r.get("accepted") and not r.get("forced")
            and r.get("size")][-window:]
    if not kept:
        return 0.0
    return max(0.0, sum(r["actual"] for r in kept) / sum(r["size"] for r in kept))


def excess_of(actual: float, prediction: float | None, curvature: float | None, budget: float, tolerance: float) -> float:
    """How far the measured change went past the allowances that scale with the step's size."""
    allowed = budget if prediction is None else prediction + tolerance * curvature + budget
    return actual - allowed


def as_predicted(actual: float, prediction: float | None, curvature: float | None, stderr: float, budget: float,
                 tolerance: float) -> bool:
    """The measured change stays within the prediction plus a surprise allowance: a share of the
    curvature term, twice the measurement's noise, and the step's share of the budget."""
    return prediction is None or actual <= prediction + tolerance * curvature + 2 * stderr + budget


def is_descent(actual: float, stderr: float) -> bool:
    """The loss measurably fell: a step that does this is kept, however much more was predicted.
    (Without this the demo rejects 38 steps that lower the acceptance loss, some by 12% of it.)"""
    return actual < -2 * stderr


def hurts(actual: float, stderr: float, budget: float) -> bool:
    """The loss measurably rose beyond the step's budget share: only such a step's weights are deferred."""
    return actual > 2 * stderr + budget


def dominant(flat: FlatWeights, stats, removed_idx: torch.Tensor, share: float = 0.5) -> torch.Tensor:
    """The fewest weights of a step whose predicted gains make up `share` of the step's predicted
    gain. When a few weights carry a failed step's whole prediction, halving the step keeps them (they
    rank first) and fails again: they are the suspects to defer. (On Lite0 a few dozen depthwise taps
    carried a predicted -1.30 of a 46,029-weight step that measured +2.51.)"""
    if stats is None or not len(removed_idx):
        return removed_idx[:0]
    g, f = flat.cat(stats.grad)[removed_idx], flat.cat(stats.second)[removed_idx]
    w = flat.base[removed_idx]
    gain = -(-g * w + 0.5 * f * w * w).double()  # positive: predicted to lower the loss
    total = float(gain.clamp(min=0).sum())
    if total <= 0:
        return removed_idx[:0]
    order = torch.argsort(gain, descending=True)
    reached = torch.cumsum(gain[order].clamp(min=0), 0) >= share * total
    count = int(torch.nonzero(reached)[0]) + 1
    return removed_idx[order[:count]]
