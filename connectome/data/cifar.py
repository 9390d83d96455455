"""CIFAR-10 from its binary release (read without unpickling anything; the python release is
pickles), from a local folder or downloaded into the cache; or from an image-folder copy or a .tar.gz
of one (connectome.data.cifar_cache); held in memory as ImageTensors."""

from pathlib import Path

import numpy as np
import torch

import connectome.data.paths as paths
from connectome.data.splits import Splits
from connectome.data.tensors import ImageTensors
from connectome.errors import ConnectomeError, reason

CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
NUM_CLASSES = 10


def _read_cifar_bin(files: list[Path]) -> ImageTensors:
    # Each record: one label byte, then 3072 bytes of a 32x32 image, red, green, blue planes.
    records = []
    for f in files:
        raw = np.fromfile(f, dtype=np.uint8)
        if raw.size % 3073 or not raw.size:
            raise ConnectomeError(f"{f} is truncated ({raw.size:,} bytes, not a whole number of 3,073-byte records): "
                                  f"replace it with a complete copy")
        raw = raw.reshape(-1, 3073)
        if raw[:, 0].max() >= NUM_CLASSES:
            raise ConnectomeError(f"{f} holds label {raw[:, 0].max()}: CIFAR-10 labels are 0-{NUM_CLASSES - 1}")
        records.append(raw)
    raw = np.concatenate(records)
    images = torch.from_numpy(raw[:, 1:].copy()).view(-1, 3, 32, 32)
    return ImageTensors(images, torch.from_numpy(raw[:, 0].astype(np.int64)))


def _cifar_folder(root: Path) -> Path | None:
    for folder in (root, root / "cifar-10-batches-bin"):
        if all((folder / f"data_batch_{i}.bin").is_file() for i in range(1, 6)) and (folder / "test_batch.bin").is_file():
            return folder
    return None


def cifar_sizes(root: Path) -> tuple[int, int] | None:
    """(training, test) records of the binary batches in `root`, from the files' sizes; None for an
    image-folder copy or a tarball (counting those means reading them)."""
    folder = _cifar_folder(root)
    if folder is None:
        return None
    train = sum((folder / f"data_batch_{i}.bin").stat().st_size for i in range(1, 6))
    return train // 3073, (folder / "test_batch.bin").stat().st_size // 3073


def cifar10(path: str | None) -> Splits:
    if path:
        from connectome.data.cifar_files import is_archive, is_image_folder
        if is_archive(Path(path)) or is_image_folder(Path(path)):
            from connectome.data.cifar_cache import cifar10_images
            return cifar10_images(path)
    root = Path(path) if path else paths.CACHE / "cifar10"
    folder = _cifar_folder(root)
    if folder is None and path is None:
        from torchvision.datasets.utils import download_and_extract_archive
        try:
            download_and_extract_archive(CIFAR10_BINARY_URL, str(root), md5=CIFAR10_BINARY_MD5)
        except Exception as e:
            raise ConnectomeError(f"no local CIFAR-10 and the download of {CIFAR10_BINARY_URL} failed "
                                  f"({reason(e)}): extract it into {root} or pass --data cifar10:/path") from None
        folder = _cifar_folder(root)
    if folder is None:
        raise ConnectomeError(f"{root} holds no CIFAR-10 binary batches (data_batch_1.bin ... test_batch.bin), "
                              f"no train/ and test/ image folders and is no .tar.gz of them")
    train = _read_cifar_bin([folder / f"data_batch_{i}.bin" for i in range(1, 6)])
    return Splits(train, _read_cifar_bin([folder / "test_batch.bin"]), NUM_CLASSES, "cifar10")
