"""Controls: a ticket's level trained from another mask or other weights. They tell a winning ticket
(its mask *and* its initialisation matter) from a merely sparse network.

Each control maps (the ticket's mask, the ticket's starting weights, a way to draw a fresh
initialisation, a seed) to the mask and the weights its training starts from.
"""

import hashlib
from typing import Callable

import torch

from connectome.pruning.mask import Mask
from connectome.registry import Registry

FreshState = Callable[[int], dict[str, torch.Tensor]]  # seed -> a new initialisation of the network

CONTROLS = Registry("control")  # by their value in the `controls` setting


@CONTROLS.register
class RandomReinit:
    """The ticket's mask with a new initialisation from the same distribution (the paper, Section 2)."""

    name = "random_reinit"

    def start(self, ticket: Mask, start_state: dict, fresh_state: FreshState, seed: int) -> tuple[Mask, dict]:
        return ticket, fresh_state(seed)


@CONTROLS.register
class RandomPrune:
    """A random mask with the ticket's per-layer counts, on the ticket's starting weights (Appendix E;
    open_lth's randomly_prune branch)."""

    name = "random_prune"

    def start(self, ticket: Mask, start_state: dict, fresh_state: FreshState, seed: int) -> tuple[Mask, dict]:
        gen = torch.Generator().manual_seed(seed)  # its own generator: the global one stays untouched
        masks = {}
        for n, m in ticket.items():
            flat = torch.zeros(m.numel(), dtype=torch.bool)
            flat[torch.randperm(m.numel(), generator=gen)[:int(m.sum())]] = True
            masks[n] = flat.view_as(m)
        return Mask(masks), start_state


def derived_seed(*parts) -> int:
    """A seed for one purpose: controls of different levels draw independent weights and masks."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "big")
