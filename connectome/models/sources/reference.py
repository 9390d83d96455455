"""The project's reference models (connectome.models.reference), with the weights shipped in
weights/reference/; untrained when `pretrained=False` (for `connectome train`)."""

from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.models.files import REFERENCE_WEIGHTS, load_weights, read_state_file
from connectome.models.provenance import Provenance
from connectome.models.reference import ARCHITECTURES
from connectome.models.registry import LoadedModel, register_source


@register_source("reference", lambda spec: spec in ARCHITECTURES, "the project's reference models")
def load(spec: str, weights_file: str | None = None, pretrained: bool = True, weights: str | None = None) -> LoadedModel:
    arch = ARCHITECTURES[spec]
    model = arch.build()
    path = Path(weights_file) if weights_file else REFERENCE_WEIGHTS / f"{spec}.safetensors"
    if weights_file or pretrained:
        if not path.is_file():
            raise ConnectomeError(f"no trained weights for {spec} at {path}: train them with "
                                  f"`connectome train recipes/train-{spec}.yaml` or pass --weights-file")
        load_weights(model, read_state_file(path), str(path))
    # A file is recorded as Path() prints it (labels written so far did), the shipped weights by name.
    provenance = Provenance("reference", spec, spec if pretrained else None,
                            str(path) if weights_file else None)
    return LoadedModel(model, spec, provenance, None, dataset=arch.dataset)
