"""The prunable weights of a model as one flat vector, with the mask over it.

A global top-k over every layer is then a single call, and writing the mask back into the model is
one multiply per tensor. The base values are kept, so a weight is only ever its base value or zero.
"""

import fnmatch

import torch
from torch import nn

from connectome.pruning.mask import Mask

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
DEFERRED = "deferred:"  # prefix of the loop state's deferred-weights tensors


def prunable_parameters(model: nn.Module, include=(), exclude=()) -> dict[str, nn.Parameter]:
    """Conv and linear weights by default (not biases, not norm layers), filtered by glob patterns."""
    out = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, PRUNABLE_TYPES) and mod.weight is not None:
            name = f"{mod_name}.weight" if mod_name else "weight"
            if include and not any(fnmatch.fnmatch(name, p) for p in include):
                continue
            if any(fnmatch.fnmatch(name, p) for p in exclude):
                continue
            out[name] = mod.weight
    return out


def rank_within(groups: torch.Tensor) -> torch.Tensor:
    """For a sequence of group ids (candidates in order), each one's rank among the earlier ones of its
    group: 0 for the first of a group, 1 for the second, ... Caps per unit and per N:M group keep the
    candidates whose rank is below their group's allowance."""
    order = torch.argsort(groups, stable=True)
    sorted_ids = groups[order]
    first = torch.searchsorted(sorted_ids, sorted_ids, side="left")  # where each group's run starts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(sorted_ids), device=groups.device) - first
    return rank


class FlatWeights:
    """The prunable weights as one flat vector, so a global top-k is a single call."""

    def __init__(self, params: dict[str, nn.Parameter]):
        self.params = params
        self.names = list(params)
        self.sizes = [p.numel() for p in params.values()]
        self.base = torch.cat([p.detach().reshape(-1) for p in params.values()]).clone()
        self.mask = torch.ones_like(self.base, dtype=torch.bool)
        self.eligible = self.base != 0  # weights already zero in the base are not candidates
        self.deferred = torch.zeros_like(self.mask)  # weights whose removal was measured far worse than predicted

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view_as(self.params[n]) for n, t in zip(self.names, flat.split(self.sizes))}

    def cat(self, per_param: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([per_param[n].reshape(-1) for n in self.names])

    @torch.no_grad()
    def write(self) -> None:
        for n, w0, m in zip(self.names, self.base.split(self.sizes), self.mask.split(self.sizes)):
            self.params[n].copy_((w0 * m).view_as(self.params[n]))

    def reset(self) -> None:
        """Every weight back to its base value."""
        self.mask.fill_(True)
        self.write()

    def to_mask(self, with_deferred: bool = False) -> Mask:
        masks = {n: m.view_as(self.params[n]).cpu().clone() for n, m in self.split(self.mask).items()}
        if with_deferred:  # loop state only: the published mask never carries these
            masks.update({DEFERRED + n: d.view_as(self.params[n]).cpu().clone() for n, d in self.split(self.deferred).items()})
        return Mask(masks)

    def load_mask(self, mask: Mask) -> None:
        self.mask = torch.cat([mask[n].reshape(-1) for n in self.names]).to(self.base.device)
        if DEFERRED + self.names[0] in mask:
            self.deferred = torch.cat([mask[DEFERRED + n].reshape(-1) for n in self.names]).to(self.base.device)

    def units(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per weight, the output unit it feeds (a row of a linear layer, an output channel of a conv:
        for a depthwise 3x3 its 9 taps), and per unit, its number of weights."""
        if getattr(self, "_units", None) is None:
            ids, sizes, offset = [], [], 0
            for n in self.names:
                p = self.params[n]
                out, per = p.shape[0], p[0].numel()
                ids.append(torch.arange(offset, offset + out, device=self.base.device).repeat_interleave(per))
                sizes.append(torch.full((out,), per, device=self.base.device))
                offset += out
            self._units = torch.cat(ids), torch.cat(sizes)
        return self._units

    def removed(self) -> int:
        return int((~self.mask & self.eligible).sum())

    def prunable(self) -> int:
        return int(self.eligible.sum())
