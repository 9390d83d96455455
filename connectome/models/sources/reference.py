"""The project's reference models (connectome.models.reference), with the weights shipped in
weights/reference/; untrained when `pretrained=False` (for `connectome train`). They take
`ToTensor()` images of their own size and normalise inside."""

from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.models.files import REFERENCE_WEIGHTS, load_weights, read_state_file
from connectome.models.loaded import LoadedModel
from connectome.models.provenance import Provenance
from connectome.models.reference import ARCHITECTURES
from connectome.models.source import SOURCES, Source


def shipped(spec: str) -> Path:
    return REFERENCE_WEIGHTS / f"{spec}.safetensors"


@SOURCES.register
class Reference(Source):
    kind = "reference"
    about = "the project's reference models"
    spelling = "reference models"
    label_prefix = "reference:"

    def claims(self, spec: str) -> bool:
        return spec in ARCHITECTURES

    def load(self, spec, weights_file=None, pretrained=True, weights=None) -> LoadedModel:
        model = self.architecture(spec)()
        path = Path(weights_file) if weights_file else shipped(spec)
        if weights_file or pretrained:
            if not path.is_file():
                raise ConnectomeError(f"no trained weights for {spec} at {path}: train them with "
                                      f"`connectome train recipes/train-{spec}.yaml` or pass --weights-file")
            load_weights(model, read_state_file(path), str(path))
        # A file is recorded as Path() prints it (labels written so far did), the shipped weights by name.
        provenance = Provenance(self.kind, spec, spec if pretrained else None, str(path) if weights_file else None)
        return LoadedModel(model, spec, provenance, None, dataset=self.dataset(spec))

    def architecture(self, spec, weights=None):
        return ARCHITECTURES[spec].build

    def weights_missing(self, spec):
        return None if shipped(spec).is_file() else f"no trained weights for {spec} in weights/reference/"

    def dataset(self, spec):
        return ARCHITECTURES[spec].dataset

    def license(self, spec):
        return "BSD-3-Clause"  # the project's own weights

    def image_transforms(self, loaded):
        import torch
        from torchvision.transforms import v2 as T

        channels, height, _ = ARCHITECTURES[loaded.spec].input_shape
        return T.Compose([T.Grayscale(1) if channels == 1 else T.RGB(), T.Resize(height, antialias=True),
                          T.CenterCrop(height), T.PILToTensor(), T.ToDtype(torch.float32, scale=True)])

    def listing(self, full=False):
        return ["Reference models of this project (weights in weights/reference/):",
                *(f"  {name:28s} {arch.about} [{arch.dataset}]" for name, arch in ARCHITECTURES.items())]
