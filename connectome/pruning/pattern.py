"""N:M patterns: in every group of M consecutive input weights of a unit, at most N survive (at least
M-N are zero). Sparse tensor cores run 2:4 (Ampere and later; PyTorch's semi-structured sparse
tensors), so a 2:4 model is faster there, not only smaller.

A group is M consecutive entries of a weight's row, the row being everything that feeds one output
unit flattened as (in, kh, kw): the reduction dimension of the layer's matrix product (im2col order
for a convolution). Only layers whose rows divide into groups take part; the others (a depthwise 3x3
kernel has rows of 9) keep every weight under a pattern. Every criterion ranks as usual; a pattern
only bounds how many weights each group may lose, so the count at which every group is full is the
pattern itself, and the counts on the way are masks that a pattern's last steps complete.
"""

import math
import re
from dataclasses import dataclass

import torch

from connectome.pruning.flat import FlatWeights, rank_within


@dataclass(frozen=True)
class Pattern:
    n: int  # weights kept of every group
    m: int  # the group's size

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text or "")
        if not match:
            raise ValueError(f"pattern must be N:M (e.g. 2:4), got {text!r}")
        n, m = int(match[1]), int(match[2])
        if not 0 <= n < m <= 64:
            raise ValueError(f"pattern N:M needs 0 <= N < M <= 64, got {n}:{m}")
        return cls(n, m)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    def layers(self, shapes: dict[str, torch.Size]) -> list[str]:
        """The layers that take part: those whose rows divide into groups of M."""
        return [name for name, shape in shapes.items() if shape[0] and (shape.numel() // shape[0]) % self.m == 0]

    def groups(self, flat: FlatWeights) -> torch.Tensor:
        """Per flat weight, its group's index, or -1 in a layer that does not take part. Within a
        layer's (out, row) view, M consecutive weights of a row share a group. Kept on `flat`: every
        step (and every batch of the learned mask) asks again."""
        cache = flat.__dict__.setdefault("_pattern_groups", {})
        if self.m not in cache:
            cache[self.m] = self._groups(flat)
        return cache[self.m]

    def _groups(self, flat: FlatWeights) -> torch.Tensor:
        taking = set(self.layers({n: flat.params[n].shape for n in flat.names}))
        ids, offset = [], 0
        for name, size in zip(flat.names, flat.sizes):
            if name in taking:
                ids.append(torch.arange(size, device=flat.base.device) // self.m + offset)
                offset += size // self.m
            else:
                ids.append(torch.full((size,), -1, dtype=torch.long, device=flat.base.device))
        return torch.cat(ids)

    def restrict(self, flat: FlatWeights) -> None:
        """Only weights of the taking-part layers are candidates."""
        flat.eligible &= self.groups(flat) >= 0

    def room(self, flat: FlatWeights, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(group of each weight, how many more weights each group may lose under `mask`): M-N less
        the zeros it holds already, removed ones and those the base had."""
        ids = self.groups(flat)
        mask = flat.mask if mask is None else mask
        inside = ids >= 0
        zero = (~mask | (flat.base == 0)) & inside
        count = int(ids.max()) + 1 if bool(inside.any()) else 0
        zeros = torch.zeros(count, dtype=torch.long, device=ids.device).index_add_(0, ids[inside], zero[inside].long())
        return ids, (self.m - self.n - zeros).clamp(min=0)

    def capacity(self, flat: FlatWeights) -> int:
        """Weights the full pattern removes from the base: the count at which every group is full."""
        taking = self.layers({n: flat.params[n].shape for n in flat.names})
        return self.removes({n: w for n, w in flat.split(flat.base).items() if n in taking})

    def lowest(self, scores: torch.Tensor, flat: FlatWeights, pool: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """The weights of `pool` in order of score, lowest first, cut to what the groups may still lose:
        any prefix is a removal that keeps the pattern."""
        order = torch.argsort(scores.masked_fill(~pool, math.inf), stable=True)[:int(pool.sum())]
        return self.allowed(order, flat, mask)

    def allowed(self, candidates: torch.Tensor, flat: FlatWeights, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The candidates (in order) that fit: within each group, only as many as it may still lose,
        the earliest first. Taking a prefix of the result keeps every group within the pattern."""
        ids, room = self.room(flat, mask)
        g = ids[candidates]
        keep = g >= 0
        candidates, g = candidates[keep], g[keep]
        return candidates[rank_within(g) < room[g]]

    def removes(self, weights: dict[str, torch.Tensor]) -> int:
        """Weights the full pattern zeroes in these tensors beside the zeros they hold already."""
        return sum(int((self.m - self.n - (w.reshape(-1, self.m) == 0).sum(1)).clamp(min=0).sum())
                   for w in weights.values())

    def holds(self, weights: dict[str, torch.Tensor]) -> list[str]:
        """The taking-part layers in which some group keeps more than N non-zero weights (none: the
        tensors follow the pattern)."""
        bad = []
        for name in self.layers({n: w.shape for n, w in weights.items()}):
            w = weights[name]
            kept = (w.reshape(-1, self.m) != 0).sum(1)
            if bool((kept > self.n).any()):
                bad.append(name)
        return bad
