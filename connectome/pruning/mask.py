"""The `Mask` type: which weights of which parameters survive (True = kept).

Stored as packed bits, `numpy.packbits` style (big-endian bit order, one bit per weight, 1 = kept),
in a safetensors file whose metadata records every shape: 1/32 of the float32 weights' size.
"""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

FORMAT = "connectome.mask/1"


class Mask:
    def __init__(self, masks: dict[str, torch.Tensor]):
        for name, m in masks.items():
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                raise ValueError(f"mask of {name!r} must be a bool tensor, got {getattr(m, 'dtype', type(m))}")
        self._masks = {name: masks[name] for name in sorted(masks)}

    @classmethod
    def ones_like(cls, params: dict[str, torch.Tensor]) -> "Mask":
        return cls({n: torch.ones(p.shape, dtype=torch.bool, device="cpu") for n, p in params.items()})

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __contains__(self, name: str) -> bool:
        return name in self._masks

    def __eq__(self, other) -> bool:
        return (isinstance(other, Mask) and self._masks.keys() == other._masks.keys()
                and all(torch.equal(self[n], other[n]) for n in self._masks))

    def names(self) -> list[str]:
        return list(self._masks)

    def items(self):
        return self._masks.items()

    def total(self) -> int:
        return sum(m.numel() for m in self._masks.values())

    def kept(self) -> int:
        return sum(int(m.sum()) for m in self._masks.values())

    def removed(self) -> int:
        return self.total() - self.kept()

    def per_layer_removed_fraction(self) -> dict[str, float]:
        return {n: 1.0 - m.float().mean().item() for n, m in self._masks.items()}

    def check_fits(self, state: dict[str, torch.Tensor]) -> None:
        for name, m in self._masks.items():
            if name not in state:
                raise ValueError(f"mask names {name!r}, which the model does not have")
            if tuple(state[name].shape) != tuple(m.shape):
                raise ValueError(f"mask of {name!r} has shape {tuple(m.shape)}, the weight {tuple(state[name].shape)}")

    def apply(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A copy of `state` with the removed weights set to zero; other tensors are shared."""
        self.check_fits(state)
        out = dict(state)
        for name, m in self._masks.items():
            out[name] = state[name] * m.to(state[name].device, state[name].dtype)
        return out

    def clone(self) -> "Mask":
        return Mask({n: m.clone() for n, m in self._masks.items()})

    # --- files ----------------------------------------------------------------------------------

    def digest(self) -> str:
        """sha256 of the packed bits with names and shapes: equal for equal masks, whatever file
        or process wrote them (what the tests pin the demo's decisions with)."""
        import hashlib
        arrays, meta = self.to_packed()
        h = hashlib.sha256()
        for name in sorted(arrays):
            a = np.ascontiguousarray(arrays[name])
            h.update(f"{name}|torch.uint8|{tuple(a.shape)}|".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def to_packed(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        arrays = {n: np.packbits(m.cpu().numpy().reshape(-1)) for n, m in self._masks.items()}
        shapes = {n: list(m.shape) for n, m in self._masks.items()}
        return arrays, {"format": FORMAT, "shapes": json.dumps(shapes)}

    @classmethod
    def from_packed(cls, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> "Mask":
        if metadata.get("format") != FORMAT:
            raise ValueError(f"not a connectome mask file (format {metadata.get('format')!r})")
        shapes = json.loads(metadata["shapes"])
        masks = {}
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            bits = np.unpackbits(arrays[name], count=n).astype(bool)
            masks[name] = torch.from_numpy(bits.reshape(shape))
        return cls(masks)

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        from safetensors.numpy import save

        from connectome.io import canonical_safetensors, write_bytes
        arrays, meta = self.to_packed()
        write_bytes(path, canonical_safetensors(save(arrays, metadata={**(metadata or {}), **meta})))

    @classmethod
    def load(cls, path: str | Path) -> "Mask":
        from safetensors import safe_open
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
        return cls.from_packed(load_file(str(path)), metadata)
