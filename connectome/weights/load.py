"""Loading a published pruned model, ready to use, with its preprocessing (`connectome.weights.load`)."""

import functools
from pathlib import Path

from torch import nn

from connectome.errors import ConnectomeError
from connectome.models.load import load_model, load_weights, source_of, state_sha256
from connectome.models.provenance import named_weights
from connectome.weights.download import _fetch
from connectome.weights.registry import Weights, get_entry, resolve


def _same(x):
    return x


def _base_source(entry: dict, base_weights_file: str | None) -> dict:
    """load_model arguments that fetch the base weights from the base model's own source."""
    from connectome.models.provenance import Provenance

    if base_weights_file:
        return {"weights_file": str(base_weights_file)}
    origin = Provenance.from_label(entry["base"]["weights"], entry["base"]["model"])
    if origin.file:
        raise ConnectomeError(f"{entry['base']['model']} was pruned from a local file ({origin.file}): "
                              f"pass base_weights_file= (sha256 {entry['base']['sha256'][:8]}...)")
    return {"weights": origin.torchvision_weights}


def load(name: str, registry: str | Path | None = None, via: str = "model",
         base_weights_file: str | Path | None = None, progress: bool = True) -> nn.Module:
    """A published pruned model, ready to use, in eval mode.

        model = connectome.weights.load("lenet_300_100.connectome_50pct_fmnist")
        preprocess = model.transforms()        # as torchvision's weights.transforms()
        model(preprocess(image).unsqueeze(0))

    The returned module also carries `model.weights`, a `Weights` record (url, transforms, meta).
    `via="model"` downloads the pruned checkpoint; `via="mask"` downloads only the mask (1/32 of the
    size), fetches the base weights from the base model's own source (torchvision, timm, the
    project's reference files, or `base_weights_file`), refuses them unless their state sha256 is the
    one the entry records, and zeroes the removed weights. Either way the result is checked, bit for
    bit, against the published state.
    """
    from connectome.pruning.mask import Mask

    if via not in ("model", "mask"):
        raise ConnectomeError(f"via={via!r}: choose 'model' or 'mask'")
    entry, base = get_entry(name, registry)
    spec = entry["base"]["model"]
    path = _fetch(name, entry["mask"] if via == "mask" else entry, base, progress)
    if via == "model":
        loaded = load_model(spec, weights=named_weights(entry["base"]["weights"]), weights_file=str(path))
    else:
        loaded = load_model(spec, **_base_source(entry, base_weights_file))
        base_state = {k: v.detach() for k, v in loaded.module.state_dict().items()}
        if state_sha256(base_state) != entry["base"]["sha256"]:
            raise ConnectomeError(f"the base weights of {spec} ({loaded.weights}) are not those {name} was pruned "
                                  f"from (state sha256 {entry['base']['sha256'][:8]}...)")
        load_weights(loaded.module, Mask.load(path).apply(base_state), str(path))
    if state_sha256(loaded.module.state_dict()) != entry["state_sha256"]:
        raise ConnectomeError(f"{name}: the loaded weights differ from the published ones")
    model = loaded.module.eval()
    preset = source_of(spec).image_transforms(loaded)
    # A plain callable, not the transform module itself: assigning an nn.Module would register it as
    # a submodule of the model (and put it into state_dict, .to(), named_modules()).
    transforms = functools.partial(_same, preset)
    model.weights = Weights(name, resolve(entry["url"], base), transforms, entry["meta"], entry)
    model.transforms = transforms
    return model
