"""Weights files: where the project keeps its own, how a file is read without unpickling code, how
a state dict is loaded into a module, and the two hashes (of a file's bytes and of a state's tensors).
"""

import hashlib
from pathlib import Path

import torch
from torch import nn

from connectome.errors import ConnectomeError

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
REFERENCE_WEIGHTS = WEIGHTS_DIR / "reference"


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of a state dict's names, dtypes, shapes and bytes, independent of the file format."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ConnectomeError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # empty, truncated or not safetensors: the library's message, on one line
            raise ConnectomeError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConnectomeError(f"{path} is not a safetensors file nor a tensors-only .pth ({type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConnectomeError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Every tensor of the module from `state` and nothing else; `source` names it in the error."""
    own = module.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
             if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k, got, want = wrong[0]
        raise ConnectomeError(f"{source} does not fit the model: {k} has shape {got}, the model's is {want}"
                              + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    # load_state_dict casts whatever it is given into the module's dtype: integers would become
    # weights silently (and verify would then agree with itself), so a float tensor must come as one.
    for k, v in state.items():
        if k in own and own[k].is_floating_point() and hasattr(v, "is_floating_point") and not v.is_floating_point():
            raise ConnectomeError(f"{source}: tensor {k} is {str(v.dtype).replace('torch.', '')}, not floating point")
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        miss, extra = result.missing_keys[:3], result.unexpected_keys[:3]
        raise ConnectomeError(f"{source} does not fit the model: missing {miss}, unexpected {extra}")


def check_finite(module: nn.Module, source: str) -> None:
    """Every floating tensor of the module finite: a NaN or an infinity in the base would make every
    loss NaN, every ranking arbitrary and the run's own manifest unreadable. One line names the first."""
    for name, t in module.state_dict().items():
        if t.is_floating_point() and t.numel() and t.device.type != "meta" and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ConnectomeError(f"{source}: tensor {name} holds {bad:,} non-finite value{'s' if bad > 1 else ''} "
                                  f"(NaN or infinity)")


def check_exact(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict casts another float type to the module's: exact where every value fits (a float64
    file of float32 values). Otherwise a run's "base" would not be the file's weights: refused before a
    run, where verify, which reads the file as stored, reports every kept weight as changed."""
    own = module.state_dict()
    for k, v in state.items():
        if k in own and own[k].is_floating_point() and hasattr(v, "dtype") and v.dtype != own[k].dtype \
                and not torch.equal(v.to(own[k].dtype).to(v.dtype), v):
            theirs, ours = (str(t.dtype).replace("torch.", "") for t in (v, own[k]))
            raise ConnectomeError(f"{source}: tensor {k} is {theirs} with values the model's {ours} cannot hold "
                                  f"exactly: convert the file to {ours} first, so that the pruned weights are the base's")
