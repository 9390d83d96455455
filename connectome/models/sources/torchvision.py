"""torchvision's classification models by name (`mobilenet_v3_large`), with the weights their enum
names (DEFAULT, or --weights IMAGENET1K_V1, ...) and that entry's own eval preset."""

from connectome.errors import ConnectomeError, reason
from connectome.models.files import load_weights, read_state_file
from connectome.models.loaded import LoadedModel
from connectome.models.preprocess import preset_config
from connectome.models.provenance import Provenance
from connectome.models.source import SOURCES, Source


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


@SOURCES.register
class Torchvision(Source):
    kind = "torchvision"
    about = "torchvision classification models (DEFAULT weights; --weights NAME for others)"
    spelling = "torchvision names"
    label_prefix = ""  # its labels (`Enum.NAME`) came first and carry no scheme
    named_weights = True

    def claims(self, spec: str) -> bool:
        return spec in torchvision_names()

    def load(self, spec, weights_file=None, pretrained=True, weights=None) -> LoadedModel:
        w = weights_entry(spec, weights)
        model = self.architecture(spec, weights)()
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
        provenance = Provenance(self.kind, spec, f"{type(w).__name__}.{w.name}", weights_file, url=w.url)
        return LoadedModel(model, spec, provenance, preset, data_config=preset_config(preset))

    def architecture(self, spec, weights=None):
        from torchvision.models import get_model

        classes = len(weights_entry(spec, weights).meta["categories"])
        return lambda: get_model(spec, weights=None, num_classes=classes)

    def meta(self, provenance):
        return {"url": provenance.url, "torchvision_weights": provenance.torchvision_weights}

    def tag_of(self, label):
        return label if "." in label and ":" not in label else None

    def weights_name(self, tag):
        return tag.rsplit(".", 1)[-1]

    def listing(self, full=False):
        from torchvision.models import get_model_weights

        lines = [f"{self.about}:"]
        for name in torchvision_names():
            try:
                weights = ", ".join(m for m in get_model_weights(name).__members__ if m != "DEFAULT")
            except Exception:
                continue
            if "IMAGENET" in weights:
                lines.append(f"  {name:28s} {weights}")
        return lines
