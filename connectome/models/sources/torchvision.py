"""torchvision's classification models by name (`mobilenet_v3_large`), with the weights their enum
names (DEFAULT, or --weights IMAGENET1K_V1, ...) and that entry's own eval preset."""

from connectome.errors import ConnectomeError, reason
from connectome.models.files import load_weights, read_state_file
from connectome.models.preprocess import preset_config
from connectome.models.provenance import Provenance
from connectome.models.registry import LoadedModel, register_source


def torchvision_names() -> list[str]:
    import torchvision
    from torchvision.models import list_models
    return list_models(module=torchvision.models)


def weights_entry(name: str, weights: str | None):
    """The torchvision weights enum member: `weights` by name, DEFAULT when None."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    try:
        return enum[weights or "DEFAULT"] if (weights or "DEFAULT") != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ", ".join(m for m in enum.__members__ if m != "DEFAULT")
        raise ConnectomeError(f"{name} has no weights {weights!r}: choose from {names}") from None


@register_source("torchvision", lambda spec: spec in torchvision_names(),
                 "torchvision classification models (DEFAULT weights; --weights NAME for others)", named_weights=True)
def load(spec: str, weights_file: str | None = None, pretrained: bool = True, weights: str | None = None) -> LoadedModel:
    from torchvision.models import get_model

    w = weights_entry(spec, weights)
    model = get_model(spec, num_classes=len(w.meta["categories"]))
    if weights_file:
        load_weights(model, read_state_file(weights_file), weights_file)
    else:
        try:
            state = w.get_state_dict(progress=True, check_hash=True)
        except Exception as e:
            raise ConnectomeError(f"cannot download {w.url} ({reason(e)}): fetch it elsewhere and pass "
                                  f"--weights-file PATH") from None
        model.load_state_dict(state)
    preset = w.transforms()
    provenance = Provenance("torchvision", spec, f"{type(w).__name__}.{w.name}", weights_file, url=w.url)
    return LoadedModel(model, spec, provenance, preset, data_config=preset_config(preset))
