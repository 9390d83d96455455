"""Pruning strategies: a strategy maps (trained weights, current mask) to the next level's mask.

Registered by name (the `strategy` setting), each built from the settings and the layer kinds, and
the check every level's mask passes: pruning only removes.
"""

import math
from typing import ClassVar, Protocol

import torch

from connectome.pruning.mask import Mask
from connectome.registry import Registry


class Strategy(Protocol):
    name: ClassVar[str]  # its value of the `strategy` setting

    def prune(self, weights: dict[str, torch.Tensor], mask: Mask) -> Mask: ...


STRATEGIES = Registry("strategy")


def _remove_smallest(scores: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """`alive` less its k entries of smallest score; a stable sort breaks ties by position."""
    flat = alive.reshape(-1)
    # Dead entries sort last (score +inf), so only survivors are removed.
    order = torch.sort(scores.reshape(-1).float().masked_fill(~flat, math.inf), stable=True).indices
    out = flat.clone()
    out[order[:k]] = False
    return out.view_as(alive)


@STRATEGIES.register
class LayerwiseMagnitude:
    """Each layer loses its rate of its surviving weights, smallest magnitude first (the paper's
    Lenet and Conv-2/4/6)."""

    name = "layerwise"

    def __init__(self, rates: dict[str, float]):
        self.rates = rates

    @classmethod
    def from_settings(cls, s, kinds: dict[str, str]) -> "LayerwiseMagnitude":
        return cls({n: s.rate(k) for n, k in kinds.items()})

    def prune(self, weights: dict[str, torch.Tensor], mask: Mask) -> Mask:
        return Mask({n: _remove_smallest(weights[n].abs(), m, int(round(self.rates[n] * int(m.sum()))))
                     for n, m in mask.items()})


@STRATEGIES.register
class GlobalMagnitude:
    """All layers pooled: the rate of all surviving weights goes, smallest magnitude first, wherever
    they are (the paper's Resnet-18 and VGG-19, where small layers would otherwise be bottlenecks)."""

    name = "global"

    def __init__(self, rate: float):
        self.rate = rate

    @classmethod
    def from_settings(cls, s, kinds: dict[str, str]) -> "GlobalMagnitude":
        return cls(s.global_rate)

    def prune(self, weights: dict[str, torch.Tensor], mask: Mask) -> Mask:
        names = mask.names()
        alive = torch.cat([mask[n].reshape(-1) for n in names])
        scores = torch.cat([weights[n].abs().reshape(-1).float() for n in names])
        kept = _remove_smallest(scores, alive, int(round(self.rate * int(alive.sum()))))
        parts = kept.split([mask[n].numel() for n in names])
        return Mask({n: p.view_as(mask[n]).clone() for n, p in zip(names, parts)})


def make_strategy(s, kinds: dict[str, str]) -> Strategy:
    """The strategy the settings name, for a network whose prunable weights have these kinds."""
    return STRATEGIES[s.strategy].from_settings(s, kinds)


def check_shrinks(old: Mask, new: Mask) -> None:
    """A level may only remove weights: same tensors, same shapes, no weight revived."""
    if old.names() != new.names():
        raise ValueError(f"pruning changed the masked tensors: {old.names()} -> {new.names()}")
    for n, m in old.items():
        if new[n].shape != m.shape or bool((new[n] & ~m).any()):
            raise ValueError(f"pruning revived weights or changed the shape of {n}")
