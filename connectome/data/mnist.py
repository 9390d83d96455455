"""MNIST and Fashion-MNIST from their IDX files (a local folder, Debian's package, or the cache),
downloaded through torchvision when none is found; held in memory as ImageTensors."""

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

import connectome.data.paths as paths
from connectome.data.splits import Splits
from connectome.data.tensors import ImageTensors
from connectome.errors import ConnectomeError, reason

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian magic with the dtype code and rank, then dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ConnectomeError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{rank}I", data[4:4 + 4 * rank])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if array.size != int(np.prod(shape)):
        raise ConnectomeError(f"{path} is truncated: header says {shape}")
    return array.reshape(shape)


def find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        for candidate in (folder / name, folder / "raw" / name):
            if candidate.is_file():
                return candidate
    return None


def _idx_complete(folder: Path) -> bool:
    return all(find_idx(folder, s) for pair in _IDX_FILES.values() for s in pair)


def _load_idx_folder(folder: Path) -> tuple[ImageTensors, ImageTensors]:
    out = []
    for split in ("train", "test"):
        images, labels = (read_idx(find_idx(folder, s)) for s in _IDX_FILES[split])
        out.append(ImageTensors(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.copy())))
    return out[0], out[1]


def mnist_family(kind: str, path: str | None) -> Splits:
    """`mnist` or `fashion-mnist`, from `path` when given."""
    import torchvision.datasets as tvd

    tv_class = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}[kind]
    cache = paths.CACHE / tv_class.__name__ / "raw"
    if path:
        candidates = [Path(path)]
    else:
        candidates = [paths.DEBIAN_FASHION_MNIST] if kind == "fashion-mnist" else []
        candidates.append(cache)
    for folder in candidates:
        if _idx_complete(folder):
            return Splits(*_load_idx_folder(folder), 10, kind)
    if path:
        raise ConnectomeError(f"{path} has no {kind} IDX files (expected {', '.join(_IDX_FILES['train'])}, "
                              f"{', '.join(_IDX_FILES['test'])}, optionally .gz)")
    try:
        tv_class(root=str(paths.CACHE), train=True, download=True)
    except Exception as e:  # torchvision raises RuntimeError or URLError after trying every mirror
        raise ConnectomeError(f"no local {kind} and the download failed ({reason(e)}): put the four IDX "
                              f"files in {cache} or pass --data {kind}:/path/to/folder") from None
    return Splits(*_load_idx_folder(cache), 10, kind)
