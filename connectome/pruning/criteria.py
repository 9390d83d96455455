"""Pruning criteria: each maps (weights, gradient statistics) to a score per weight; the lowest scores
are zeroed first. None of them changes a surviving weight.

The loss change of zeroing one weight w, to second order with a diagonal curvature F, is
    dloss(w -> 0) = -g*w + 1/2*F*w^2,
and of restoring a zeroed weight to its pretrained value w0, with g measured at zero,
    dloss(0 -> w0) = g*w0 + 1/2*F*w0^2.
Steps are predicted with these sums whatever the criterion, so every criterion gets the same step control.
"""

from typing import ClassVar

import torch

from connectome.pruning.statistics import GradStats


class Criterion:
    name: ClassVar[str]
    needs_statistics: ClassVar[bool] = True
    about: ClassVar[str] = ""

    def __init__(self, **options):
        self.options = options

    def scores(self, name: str, w: torch.Tensor, stats: GradStats | None, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


REGISTRY: dict[str, type[Criterion]] = {}


def register(cls: type[Criterion]) -> type[Criterion]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str, **options) -> Criterion:
    from connectome.errors import ConnectomeError
    if name not in REGISTRY:
        raise ConnectomeError(f"unknown criterion {name!r}: choose from {', '.join(REGISTRY)}")
    return REGISTRY[name](**options)


def predicted_removal(w, stats: GradStats, name: str) -> torch.Tensor:
    return -stats.grad[name] * w + 0.5 * stats.second[name] * w * w


def predicted_restore(w0, stats: GradStats, name: str) -> torch.Tensor:
    return stats.grad[name] * w0 + 0.5 * stats.second[name] * w0 * w0


@register
class Magnitude(Criterion):
    name = "magnitude"
    needs_statistics = False
    about = "|w|, global"

    def scores(self, name, w, stats, generator):
        return w.abs()


@register
class Random(Criterion):
    name = "random"
    needs_statistics = False
    about = "uniform random order (seeded)"

    def scores(self, name, w, stats, generator):
        return torch.rand(w.shape, generator=generator).to(w.device)


@register
class Taylor(Criterion):
    name = "taylor"
    about = "|g*w|, first-order saliency (Molchanov et al.; SNIP)"

    def scores(self, name, w, stats, generator):
        return (stats.grad[name] * w).abs()


@register
class Fisher(Criterion):
    name = "fisher"
    about = "1/2*F*w^2 with F the per-sample second moment (OBD with a Fisher diagonal)"

    def scores(self, name, w, stats, generator):
        return 0.5 * stats.second[name] * w * w


@register
class DLoss(Criterion):
    name = "dloss"
    about = "-g*w + 1/2*F*w^2, the expected loss change of zeroing"

    def scores(self, name, w, stats, generator):
        return predicted_removal(w, stats, name)


@register
class Connectome(Criterion):
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
    about = "-g*w + z*|w|*stderr(g) + 1/2*F*w^2 (a confidence bound on the loss change)"

    def scores(self, name, w, stats, generator):
        z = float(self.options.get("z", 8.0))
        return predicted_removal(w, stats, name) + z * w.abs() * stats.stderr(name)
