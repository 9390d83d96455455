"""`LoadedModel`: what a source's `load` returns, a module with its spec, weights record and eval
preprocessing."""

from dataclasses import dataclass
from typing import Callable

from torch import nn

from connectome.models.provenance import Provenance
from connectome.models.source import SOURCES


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
        p = self.provenance
        out = dict(SOURCES[p.source].meta(p))
        if p.sha256:
            out["weights_file_sha256"] = p.sha256
        return out
