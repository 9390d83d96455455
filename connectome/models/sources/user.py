"""`package.module:function`: a user's builder returning an nn.Module, usually with --weights-file.

The module may declare its preprocessing the timm way (a `pretrained_cfg` or `default_cfg` dict);
without one it gets torchvision's ImageNet eval (connectome.models.preprocess.IMAGENET_EVAL)."""

import importlib

from torch import nn

from connectome.errors import ConnectomeError
from connectome.models.files import load_weights, read_state_file
from connectome.models.loaded import LoadedModel
from connectome.models.preprocess import data_config, eval_transform
from connectome.models.provenance import Provenance
from connectome.models.source import SOURCES, Source


def build(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConnectomeError(f"cannot import {spec}: {e}") from None
    model = builder()
    if not isinstance(model, nn.Module):
        raise ConnectomeError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


@SOURCES.register
class User(Source):
    kind = "user"
    about = "package.module:function returning an nn.Module (with --weights-file)"
    spelling = "package.module:function"
    label_prefix = "builder:"
    imports_code = True
    fallback = True  # any spec with a colon: other sources' colon specs (timm:) are theirs

    def claims(self, spec: str) -> bool:
        return ":" in spec

    def load(self, spec, weights_file=None, pretrained=True, weights=None) -> LoadedModel:
        model = build(spec)
        if weights_file:
            load_weights(model, read_state_file(weights_file), weights_file)
        config = data_config(model)
        return LoadedModel(model, spec, Provenance(self.kind, spec, spec, weights_file), eval_transform(config),
                           data_config=config)

    def listing(self, full=False):
        return [f"Your own: {self.about}; it may declare its preprocessing as timm's "
                f"pretrained_cfg (default: torchvision's ImageNet eval)."]
