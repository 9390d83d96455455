"""A model source and the table of them, in the spirit of timm's `register_model`.

A source is one kind of model spec (torchvision names, `timm:ARCH.TAG`, the project's models, ...)
and answers every question the rest of the project asks about its models: how one loads, its
architecture without weights, whether its weights can be had offline, the label its
weights are stored under, their license, the preprocessing of an image, the data it was made for,
and whether building it runs a user's code. Code outside connectome.models asks the source of a spec
(`source_of`) rather than testing its kind, so a new source is one module with one `@SOURCES.register`
class in connectome.models.sources.

This module holds the base and the table only; it imports nothing of the project but its errors and
the registry, so provenance and the loaded-model record, below the sources, can read the table the
sources fill.
"""

from typing import Callable

from connectome.errors import ConnectomeError
from connectome.registry import Registry


class Source:
    """The base of every source: defaults for a source that has nothing to say on a question."""

    kind: str  # the table's key, and `Provenance.source` of what it loads
    about: str = ""  # one line about it, for `connectome models`
    spelling: str = ""  # how a spec of it is written, for the error on an unknown spec
    label_prefix: str = ""  # what stored labels put before the weights' tag; never change one (files carry it)
    named_weights: bool = False  # takes --weights NAME (torchvision's enum members)
    imports_code: bool = False  # building a model runs code the user names: a server refuses it unless allowed
    fallback: bool = False  # claims what no other source does, so it is asked last

    def claims(self, spec: str) -> bool:
        """Whether `spec` names a model of this source."""
        raise NotImplementedError

    def load(self, spec: str, weights_file: str | None = None, pretrained: bool = True,
             weights: str | None = None) -> "LoadedModel":  # noqa: F821 (connectome.models.loaded)
        """The model with its weights: `weights_file` instead of the source's own; `pretrained=False`
        untrained where the source can; `weights` a name, only where `named_weights`."""
        raise NotImplementedError

    def check_name(self, spec: str) -> None:
        """Raise ConnectomeError when a spec it claims names nothing it has (cheaply, nothing built)."""

    def architecture(self, spec: str, weights: str | None = None) -> Callable | None:
        """A function that builds the module without weights (for counting its weights), or None
        where that needs a user's code. Raises ConnectomeError for `weights` it does not have."""
        return None

    def weights_missing(self, spec: str) -> str | None:
        """Why the source's own weights cannot be had here, where that is known without a download;
        None where they can, or where only a download will tell."""
        return None

    def dataset(self, spec: str) -> str | None:
        """The data spec the model was made for, when it was made for one."""
        return None

    def license(self, spec: str) -> str | None:
        """The license of the model's weights, when the source states it."""
        return None

    def image_transforms(self, loaded) -> Callable | None:
        """The eval preprocessing of one image (PIL), as torchvision's `weights.transforms()` gives it."""
        return loaded.transforms

    def meta(self, provenance) -> dict:
        """What a run's manifest records about the weights beside their label."""
        return {}

    def label(self, tag: str) -> str:
        """The stored label of the source's weights `tag`."""
        return self.label_prefix + tag

    def tag_of(self, label: str) -> str | None:
        """The weights' tag a stored label gives, if the label is one of this source's."""
        if self.label_prefix and label.startswith(self.label_prefix):
            return label[len(self.label_prefix):]
        return None

    def weights_name(self, tag: str) -> str | None:
        """The `--weights` name that loads the weights `tag` again, where the source takes names."""
        return None

    def listing(self, full: bool = False) -> list[str]:
        """`connectome models`' section for this source: a heading and its models (`full`: all of a
        long catalogue)."""
        return [self.about]


# One instance of each by kind, in registration order (the order `connectome models` lists them).
SOURCES = Registry("model source", key="kind", instance=True)


def source_of(spec: str) -> Source:
    """The source that claims `spec`: the first one registered, a fallback only when no other does."""
    for source in sorted(SOURCES.values(), key=lambda s: s.fallback):
        if source.claims(spec):
            return source
    spellings = [s.spelling for s in SOURCES.values() if s.spelling]
    raise ConnectomeError(f"unknown model {spec!r}: see `connectome models` ({', '.join(spellings[:-1])}, "
                          f"or {spellings[-1]})")
