"""Image folders read as files through the model's eval transform: `folder:PATH`, classes numbered
0..N-1 in sorted folder order, and `imagenet:PATH`, folders named by ImageNet-1k synset (wnid)
labelled with their ImageNet-1k index, so a subset of the 1,000 classes (Imagenette's ten) is
scored over all 1,000 logits.

Both want PATH/train/ and PATH/val/ with one folder per class: the layout of torchvision's ImageNet
root (beside its meta.bin) and of Imagenette. The wnid order is timm's shipped ImageNet-1k synset
list (timm.data.ImageNetInfo), the order of every ImageNet-1k classifier's outputs.
"""

import os
from functools import lru_cache
from pathlib import Path

from torchvision.datasets import ImageFolder

from connectome.data.splits import Splits
from connectome.errors import ConnectomeError, reason

IMAGENET_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_indices() -> dict[str, int]:
    """wnid -> ImageNet-1k index (n01440764 -> 0, n02102040 -> 217, ...), from timm's synset list."""
    from timm.data import ImageNetInfo

    return {wnid: i for i, wnid in enumerate(ImageNetInfo("imagenet-1k").label_names())}


class ImageNetFolder(ImageFolder):
    """An ImageFolder whose class folders are ImageNet-1k wnids, any subset of them, each labelled with
    its ImageNet-1k index. `classes` lists the folders present; `class_to_idx` maps them to indices."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
        index = imagenet_indices()
        for name in classes:
            if name not in index:
                raise ConnectomeError(f"{Path(directory) / name}: folder {name!r} is not an ImageNet-1k synset "
                                      f"(imagenet:PATH wants wnid folders such as n01440764; folder:PATH numbers "
                                      f"any folders 0..N-1)")
        return classes, {name: index[name] for name in classes}


class UnreadableImage(ConnectomeError):
    """An image file that cannot be decoded. Raised in a DataLoader worker, it comes back to the main
    process rebuilt from the worker's whole traceback: only its last line, this error's own, is kept."""

    def __init__(self, message: str):
        own = f"{type(self).__module__}.{type(self).__qualname__}: "
        super().__init__(message.strip().splitlines()[-1].removeprefix(own))


def load_rgb(path: str):
    """torchvision's PIL loader, with a damaged or huge file refused in one line naming it."""
    from PIL import Image
    from torchvision.datasets.folder import pil_loader

    try:
        return pil_loader(path)
    except Image.DecompressionBombError as e:  # raised by open() from the header of a huge image
        raise UnreadableImage(f"{path} is too large to decode ({reason(e)}): resize it or leave it out") from None
    except Exception as e:  # noqa: BLE001 damaged files make PIL's decoders raise OSError, ValueError, SyntaxError...
        raise UnreadableImage(f"{path} is not a readable image ({reason(e)}): replace it or leave it out") from None


def _read(cls, folder: Path, transforms) -> ImageFolder:
    try:
        return cls(str(folder), transform=transforms, loader=load_rgb)
    except FileNotFoundError as e:  # torchvision: no class folders, or a class folder without images
        raise ConnectomeError(f"{folder}: {str(e).splitlines()[0]}") from None


def check_layout(kind: str, path: str | None) -> None:
    """Refuse, reading no file, a PATH without the train/ and val/ class folders both kinds want."""
    if not path:
        raise ConnectomeError(f"--data {kind}:PATH needs a folder with train/ and val/ subfolders")
    for split in ("train", "val"):
        if not (Path(path) / split).is_dir():
            raise ConnectomeError(f"{Path(path) / split} does not exist: {kind}:PATH needs train/ and val/ class folders")


def numbered_folders(kind: str, path: str, transforms) -> Splits:
    """`folder:PATH` as Splits of train/ and val/ through `transforms`, classes numbered 0..N-1."""
    root = Path(path)
    train, val = (_read(ImageFolder, root / s, transforms) for s in ("train", "val"))
    if train.classes != val.classes:
        raise ConnectomeError(f"{root}: train/ and val/ have different class folders")
    return Splits(train, val, len(train.classes), kind)


def imagenet_folders(kind: str, path: str, transforms) -> Splits:
    """`imagenet:PATH` as Splits of train/ and val/ through `transforms`, labelled with ImageNet-1k
    indices: train/ and val/ may hold different subsets of the 1,000 classes."""
    train, val = (_read(ImageNetFolder, Path(path) / s, transforms) for s in ("train", "val"))
    return Splits(train, val, IMAGENET_CLASSES, kind)


def folder_sizes(path: Path) -> tuple[int, int] | None:
    """Images of train/ and val/, counted as torchvision's ImageFolder lists them (file names only:
    nothing is opened); None where a split cannot be listed."""
    try:
        return _counted(str(path), (path / "train").stat().st_mtime_ns, (path / "val").stat().st_mtime_ns)
    except OSError:
        return None


@lru_cache(maxsize=16)
def _counted(root: str, train_mtime: int, val_mtime: int) -> tuple[int, int] | None:
    """Cached while the split folders are unchanged (their mtimes are the key)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    sizes = []
    for split in ("train", "val"):
        folder = os.path.join(root, split)
        try:
            _, class_to_idx = find_classes(folder)
            sizes.append(len(make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)))
        except OSError:  # FileNotFoundError: no class folders, or one without images
            return None
    return sizes[0], sizes[1]
