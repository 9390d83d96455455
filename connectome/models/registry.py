"""The registry of model sources, in the spirit of timm's `register_model`: each source (torchvision,
timm, the reference models, efficientnet_lite0, a user's builder) is a function registered with the
kind it answers to, a test of which specs it claims, and one line about it. `LoadedModel` is what a
source's function returns.

This module holds the table only; connectome.models.sources fills it (in matching order) and
connectome.models.load looks specs up in it.
"""

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from connectome.models.provenance import Provenance


@dataclass
class LoadedModel:
    module: nn.Module
    spec: str  # what the user named
    provenance: Provenance  # which weights, from where
    transforms: Callable | None = None  # eval transforms for image folders; None for tensor datasets
    dataset: str | None = None  # the data the model was made for, when known
    data_config: dict | None = None  # the transforms as a timm data config (input_size, crop_pct, ...), when known

    @property
    def weights(self) -> str:
        """The provenance's label (`Enum.NAME`, `file:PATH`, `untrained`, ...), as files store it."""
        return self.provenance.label

    @property
    def meta(self) -> dict:
        """What a run's manifest records beside the label; its keys are in files already written."""
        p, out = self.provenance, {}
        if p.source == "torchvision":
            out = {"url": p.url, "torchvision_weights": p.torchvision_weights}
        if p.sha256:
            out["weights_file_sha256"] = p.sha256
        return out


# A source's loader: (spec, weights_file, pretrained, weights) -> LoadedModel. `weights` is a torchvision
# weights name and reaches only sources registered with named_weights=True.
Loader = Callable[..., LoadedModel]


@dataclass(frozen=True)
class Source:
    kind: str
    claims: Callable[[str], bool]  # whether a spec names a model of this source
    load: Loader = field(repr=False)
    about: str = ""
    named_weights: bool = False  # takes --weights NAME (torchvision's enum members)


SOURCES: dict[str, Source] = {}  # by kind, in the order specs are matched


def register_source(kind: str, claims: Callable[[str], bool], about: str = "", named_weights: bool = False):
    """Decorator: register `load(spec, weights_file, pretrained, weights)` as the source `kind`.
    Sources are matched in registration order, so one that claims broadly (user code) comes last."""
    def decorate(load: Loader) -> Loader:
        if kind in SOURCES:
            raise ValueError(f"model source {kind!r} is registered twice")
        SOURCES[kind] = Source(kind, claims, load, about, named_weights)
        return load
    return decorate
