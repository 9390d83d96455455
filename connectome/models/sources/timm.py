"""`timm:ARCH[.TAG]`: a timm model with its pretrained weights (from the Hugging Face Hub) and its
own pretrained_cfg preprocessing."""

from connectome.errors import ConnectomeError, reason
from connectome.models.files import load_weights, read_state_file
from connectome.models.loaded import LoadedModel
from connectome.models.preprocess import data_config, eval_transform
from connectome.models.provenance import Provenance
from connectome.models.source import SOURCES, Source

PREFIX = "timm:"


def _where(name: str) -> str:
    """The weights' address, as the error of a failed download names it."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name) if "." in name else None
    return f"https://huggingface.co/{cfg.hf_hub_id}" if cfg and cfg.hf_hub_id else (cfg.url if cfg else name)


@SOURCES.register
class Timm(Source):
    kind = "timm"
    about = "timm:ARCH.TAG, with timm's pretrained weights"
    spelling = "timm:NAME"
    label_prefix = PREFIX

    def claims(self, spec: str) -> bool:
        return spec.startswith(PREFIX)

    def check_name(self, spec):
        import timm

        name = spec[len(PREFIX):]
        if not timm.is_model(name.split(".")[0]):
            raise ConnectomeError(f"unknown timm model {name!r} (see `connectome models --timm`)")

    def load(self, spec, weights_file=None, pretrained=True, weights=None) -> LoadedModel:
        import timm

        self.check_name(spec)
        name = spec[len(PREFIX):]
        try:
            model = timm.create_model(name, pretrained=not weights_file)
        except Exception as e:
            raise ConnectomeError(f"cannot download {_where(name)} ({reason(e)}): fetch it elsewhere and pass "
                                  f"--weights-file PATH") from None
        if weights_file:
            load_weights(model, read_state_file(weights_file), weights_file)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        url = f"https://huggingface.co/{cfg['hf_hub_id']}" if cfg.get("hf_hub_id") else cfg.get("url") or None
        config = data_config(model)
        return LoadedModel(model, spec, Provenance(self.kind, name, name, weights_file, url=url),
                           eval_transform(config), data_config=config)

    def architecture(self, spec, weights=None):
        import timm
        return lambda: timm.create_model(spec[len(PREFIX):], pretrained=False)

    def license(self, spec):
        import timm

        cfg = timm.models.get_pretrained_cfg(spec[len(PREFIX):])
        return cfg.license if cfg is not None and cfg.license else None

    def listing(self, full=False):
        import timm

        names = timm.list_models(pretrained=True)
        return [f"timm: {len(names)} pretrained models, named timm:ARCH.TAG (e.g. timm:mobilenetv3_large_100.ra_in1k)",
                *(f"  timm:{name}" for name in (names if full else ()))]
