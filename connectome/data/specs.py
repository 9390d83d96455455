"""Data specs, `KIND[:PATH]`, resolved to Splits: `mnist`, `fashion-mnist`, `cifar10` (in memory,
downloaded through torchvision when no local copy exists and a network allows), `imagenet:PATH` and
`folder:PATH` (image files through the model's eval transforms)."""

from pathlib import Path

from connectome.errors import ConnectomeError

KINDS = ("mnist", "fashion-mnist", "cifar10", "imagenet", "folder")
ALIASES = {"fmnist": "fashion-mnist", "cifar-10": "cifar10"}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """(kind, path or None); unknown kinds refused."""
    kind, _, path = spec.partition(":")
    kind = kind.lower().replace("_", "-")
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ConnectomeError(f"unknown data spec {spec!r}: use one of {', '.join(k + '[:PATH]' for k in KINDS)}")
    return kind, path or None


def load_dataset(spec: str, transforms=None):
    """Resolve a data spec. `transforms` (the model's eval transforms) apply to image folders only."""
    kind, path = parse_spec(spec)
    if path and not Path(path).exists():
        raise ConnectomeError(f"data folder {path} does not exist")
    if kind in ("mnist", "fashion-mnist"):
        from connectome.data.mnist import mnist_family
        return mnist_family(kind, path)
    if kind == "cifar10":
        from connectome.data.cifar import cifar10
        return cifar10(path)
    from connectome.data.folders import image_folder
    return image_folder(kind, path, transforms)
