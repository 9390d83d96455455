"""Models: a spec (`mobilenet_v3_large`, `timm:ARCH.TAG`, `lenet_300_100`, `efficientnet_lite0`,
`package.module:function`) resolves to a module, its eval preprocessing and a `Provenance` record of
its weights.

    source       the Source base and the table of sources: every fact about a kind of model is
                 a question its source answers
    sources/     one module per source (reference, lite0, torchvision, timm, user), registered on import
    load         load_model: a spec's source asked to load it
    loaded       LoadedModel, what a source's load returns
    provenance   where weights came from, and the label run folders and published files carry
    preprocess   eval preprocessing as a timm data config; a builder's pretrained_cfg; overrides
    files        weights files: safe reading, loading into a module, hashes
    reference    the project's own architectures; efficientnet_lite0 the Lite0 weights conversion
    train        `connectome train`: a reference model from its recipe
"""

from connectome.models.files import file_sha256, load_weights, read_state_file, state_sha256
from connectome.models.load import load_model
from connectome.models.loaded import LoadedModel
from connectome.models.preprocess import IMAGENET_EVAL, check_preprocess, data_config, eval_transform
from connectome.models.provenance import Provenance
from connectome.models.source import SOURCES, Source, source_of

__all__ = ["load_model", "source_of", "LoadedModel", "Provenance", "Source", "SOURCES",
           "IMAGENET_EVAL", "check_preprocess", "data_config", "eval_transform",
           "file_sha256", "load_weights", "read_state_file", "state_sha256"]
