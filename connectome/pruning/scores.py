"""Scores: each maps (weights, gradient statistics) to a score per weight; the lowest scores are zeroed
first. The greedy and one-shot methods (connectome.pruning.methods) rank by them; a new score is one
registered class here. None of them changes a surviving weight.

The loss change of zeroing one weight w, to second order with a diagonal curvature F, is
    dloss(w -> 0) = -g*w + 1/2*F*w^2,
and of restoring a zeroed weight to its pretrained value w0, with g measured at zero,
    dloss(0 -> w0) = g*w0 + 1/2*F*w0^2.
Steps are predicted with these sums whatever the score, so every score gets the same step control.
"""

from typing import ClassVar

import torch

from connectome.pruning.statistics import GradStats
from connectome.registry import Registry


class Score:
    name: ClassVar[str]
    # Ranks by the gradient statistics (stats.grad, .second, .variance): blind where the gradient is
    # exactly zero, so the loop ranks those weights last (connectome.pruning.step.unknown).
    needs_statistics: ClassVar[bool] = True
    # Ranks by stats.input_norm: the pass must be collect(..., input_norms=True).
    needs_input_norms: ClassVar[bool] = False
    # The run settings it takes as options, by name: they decide the runs it ranks (their digest).
    settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options):
        self.options = options

    def scores(self, name: str, w: torch.Tensor, stats: GradStats | None, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


REGISTRY = Registry("score")


def get(name: str, **options) -> Score:
    """The score `name` with its options; an unknown name is refused in one line naming the scores."""
    return REGISTRY[name](**options)


def of(s) -> Score:
    """The score run settings `s` name, with the options it declares taken from them."""
    cls = REGISTRY[s.score]
    return cls(**{name: getattr(s, name) for name in cls.settings})


def predicted_removal(w, stats: GradStats, name: str) -> torch.Tensor:
    return -stats.grad[name] * w + 0.5 * stats.second[name] * w * w


def predicted_restore(w0, stats: GradStats, name: str) -> torch.Tensor:
    return stats.grad[name] * w0 + 0.5 * stats.second[name] * w0 * w0


@REGISTRY.register
class Magnitude(Score):
    """|w|, global."""
    name = "magnitude"
    needs_statistics = False

    def scores(self, name, w, stats, generator):
        return w.abs()


@REGISTRY.register
class Random(Score):
    """Uniform random order (seeded)."""
    name = "random"
    needs_statistics = False

    def scores(self, name, w, stats, generator):
        return torch.rand(w.shape, generator=generator).to(w.device)


@REGISTRY.register
class Taylor(Score):
    """|g*w|, first-order saliency (Molchanov et al.; SNIP)."""
    name = "taylor"

    def scores(self, name, w, stats, generator):
        return (stats.grad[name] * w).abs()


@REGISTRY.register
class Fisher(Score):
    """1/2*F*w^2 with F the per-sample second moment (OBD with a Fisher diagonal)."""
    name = "fisher"

    def scores(self, name, w, stats, generator):
        return 0.5 * stats.second[name] * w * w


@REGISTRY.register
class DLoss(Score):
    """-g*w + 1/2*F*w^2, the expected loss change of zeroing."""
    name = "dloss"

    def scores(self, name, w, stats, generator):
        return predicted_removal(w, stats, name)


@REGISTRY.register
class Connectome(Score):
    """The expected loss change of zeroing, made conservative where the gradient is uncertain:
        -g*w + z*|w|*se(g) + 1/2*F*w^2,   se(g) = sqrt(var/N), the standard error of the mean gradient.
    Ranking by -g*w alone picks the weights whose measured gradient is luckiest: with N samples a
    gradient of pure noise still gives |g*w| about |w|*se, and the greedy choice keeps exactly those.
    The z*|w|*se term charges every weight for that noise, so the signed term only counts where the
    data support it; as N grows it tends to dloss. z = 8 by measurement: on LeNet-300-100 at 50%
    removed, z = 2 fell to 60.8% top-1 (dloss, z = 0: 76.2%), z = 8 kept 88.55% (dense 88.76%,
    one-shot Fisher 88.20%) with the loss down from 0.403 to 0.330. The charge is larger than sampling
    noise alone would ask: it also covers the error of the quadratic model, largest where |g*w| is."""

    name = "connectome"
    settings = ("confidence",)

    def scores(self, name, w, stats, generator):
        z = float(self.options.get("confidence", 8.0))
        return predicted_removal(w, stats, name) + z * w.abs() * stats.stderr(name)


def input_norm(stats: GradStats | None, name: str) -> torch.Tensor:
    if stats is None or stats.input_norm is None:
        from connectome.errors import ConnectomeError
        raise ConnectomeError("this score ranks by input norms: collect the statistics with input_norms=True")
    return stats.input_norm[name]


def row_quantiles(scores: torch.Tensor) -> torch.Tensor:
    """Each score replaced by its quantile within its row (output unit: a row of a linear layer, an
    output channel of a conv), (rank + 1/2) / n for a row of n weights, ranks 0..n-1 in increasing score
    order (ties in index order).

    A global cut at any value t then takes from every row the weights whose quantile is below t: from
    a row of n weights, floor(t*n) or ceil(t*n) of them (ceil(t*n - 1/2) to floor(t*n + 1/2), the one
    extra weight at exactly t going to whichever rows the caller's tie-break favours). That is what is
    guaranteed: every row loses the same fraction t to within one weight, so rows of equal size lose
    counts at most one apart, and t is k/N to within about one weight per row. The share counts every
    weight of the row (already zero ones rank lowest), as Wanda's per-row sparsity does; it is exact for
    a one-shot cut, while in the loop the ranks are recomputed on new input norms at every step, so the
    shares removed so far may drift apart by more."""
    rows = scores.reshape(scores.shape[0], -1)
    n = rows.shape[1]
    rank = torch.empty_like(rows, dtype=torch.float64)
    order = rows.argsort(dim=1, stable=True)
    rank.scatter_(1, order, torch.arange(n, dtype=torch.float64, device=rows.device).expand_as(rows).contiguous())
    return ((rank + 0.5) / n).float().view_as(scores)


@REGISTRY.register
class Wanda(Score):
    """Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"):
    |w| * ||x||, the weight times the norm of its input over the calibration set (for a conv, of the
    input values its tap multiplies: connectome.pruning.statistics.InputNorms). That product is the norm
    of the change of the weight's output unit, over the calibration set, when the weight is zeroed.
    Compared across the whole network here, where the paper compares within each output unit (wanda_row).

    No gradient statistics: a weight with no gradient is not unknown to it (the |w|*||x|| of a weight
    feeding a saturated unit is as measured as any other), and one with no input is truly free on the
    calibration data, so the loop's zero-gradient rule must not reorder them (it would also undo
    wanda_row's equal shares)."""

    name = "wanda"
    needs_statistics = False
    needs_input_norms = True

    def scores(self, name, w, stats, generator):
        return w.abs() * input_norm(stats, name)


@REGISTRY.register
class WandaRow(Wanda):
    """Wanda as the paper applies it: weights compared within each output unit only, every unit losing
    the same share. The loop and compare take a global top-k, so the scores are made comparable across
    units by ranking them within their row (row_quantiles): a global cut at quantile t then removes the
    fraction t of every row."""

    name = "wanda_row"
    # wanda ranked within each output unit (the paper's per-row comparison): every row loses the same share

    def scores(self, name, w, stats, generator):
        return row_quantiles(super().scores(name, w, stats, generator))
