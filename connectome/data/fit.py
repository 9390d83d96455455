"""Whether a model takes a dataset's samples: one sample through it, and where a layer refuses it, one
line saying what that layer takes and what the data gives, in place of torch's `mat1 and mat2 shapes
cannot be multiplied` from deep inside the first pass."""

import torch
from torch import nn
from torch.utils.data import Dataset

from connectome.errors import ConnectomeError, reason


def _takes(layer: nn.Module) -> str:
    """What a layer takes, as linear and convolutional layers (torch's and others') record it."""
    if hasattr(layer, "in_features"):
        return f"takes {layer.in_features:,} values per image"
    if hasattr(layer, "in_channels"):
        return f"takes {layer.in_channels} channels"
    return "refuses them"


def forward_checked(model: nn.Module, x: torch.Tensor, data: str, name: str = "the model") -> torch.Tensor:
    """model(x), or a ConnectomeError naming the layer that cannot take x (a batch of `data`'s images).
    Running out of memory is no misfit: it is raised as it is."""
    entered = []  # leaf modules in the order the pass reaches them: the last one is where it failed
    hooks = [m.register_forward_pre_hook(lambda m, _: entered.append(m))
             for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            return model(x)
    except RuntimeError as e:
        if isinstance(e, torch.OutOfMemoryError):
            raise
        gives = "x".join(map(str, x.shape[1:]))
        names = {m: n for n, m in model.named_modules()}
        where = (f"its layer {names[entered[-1]]} ({type(entered[-1]).__name__}) {_takes(entered[-1])}"
                 if entered else "it refuses them")
        raise ConnectomeError(f"{name} does not take the {gives} images ({x[0].numel():,} values) of {data}: {where} "
                              f"({reason(e)}); give it data of the shape it was made for") from None
    finally:
        for h in hooks:
            h.remove()


def check_fit(model: nn.Module, dataset: Dataset, classes: int, data: str, name: str, device) -> None:
    """Refuse, before any pass, a dataset whose first sample the model cannot take, or whose labels
    (0..classes-1) index past the model's outputs."""
    x, _ = dataset[0]
    if not isinstance(x, torch.Tensor):  # image files without the model's transforms stay PIL images
        raise ConnectomeError(f"{data} gives {type(x).__name__} samples, not tensors: {name} has no eval "
                              f"transforms for image files; use data held as tensors (mnist, cifar10) or "
                              f"a model with its own preprocessing")
    was_training = model.training
    out = forward_checked(model.eval(), x.unsqueeze(0).to(device), data, name)
    model.train(was_training)
    if out.ndim != 2 or out.shape[1] < classes:
        raise ConnectomeError(f"{name} gives outputs of shape {tuple(out.shape[1:])} per image, where {data} "
                              f"has {classes:,} classes: give it data of the classes it was made for")
