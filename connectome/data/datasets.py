"""Dataset specs: `mnist[:/path]`, `fashion-mnist[:/path]`, `cifar10[:/path]`, `imagenet:/path`, `folder:/path`.

Local files are read first; the MNIST family and CIFAR-10 are downloaded through torchvision when no
local copy exists and a network allows. Small datasets are held in memory as uint8 tensors and become
`ToTensor()`-style floats in [0, 1] batch by batch: models trained here normalise inside themselves.
"""

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from connectome.errors import ConnectomeError, reason as _reason

CACHE = Path(os.environ.get("CONNECTOME_DATA", Path.home() / ".cache" / "connectome" / "data"))
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# The binary CIFAR-10 release, read without unpickling anything (the python release is pickles).
CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"


class Normalization:
    """uint8 images, on any device, to floats as an image transform makes them: x/255 (x*(1/255) for
    torchvision's v2 ToDtype, which differs in the last bit), then (x - mean)/std per channel when given.
    The same operations in the same order as torchvision's, so the floats equal theirs bit for bit."""

    def __init__(self, mean=None, std=None, reciprocal: bool = False):
        if (mean is None) != (std is None):
            raise ValueError("a normalization takes both mean and std, or neither")
        self.mean = None if mean is None else [float(v) for v in mean]
        self.std = None if std is None else [float(v) for v in std]
        self.reciprocal = reciprocal
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # one copy per device, not per batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().mul_(1.0 / 255) if self.reciprocal else x.float().div_(255)
        if self.mean is not None:
            if x.device not in self._on:
                self._on[x.device] = tuple(torch.tensor(v, dtype=torch.float32, device=x.device).view(-1, 1, 1)
                                           for v in (self.mean, self.std))
            mean, std = self._on[x.device]
            x.sub_(mean).div_(std)
        return x

    def __repr__(self):
        return f"Normalization(mean={self.mean}, std={self.std}, reciprocal={self.reciprocal})"


PLAIN = Normalization()  # ToTensor() style: floats in [0, 1]


class ImageTensors(Dataset):
    """Images as one uint8 tensor (N, C, H, W) and labels (N,): fast to slice, cheap to keep. They
    become floats batch by batch, on the device, by `normalization` (default x/255: models trained here
    normalise inside themselves; decoded image folders keep the model's own normalisation here)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalization: Normalization = PLAIN):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError("ImageTensors wants uint8 images (N, C, H, W) and N labels")
        self.images, self.labels, self.normalization = images, labels.long(), normalization

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.normalization(self.images[i]), self.labels[i]

    def subset(self, indices) -> "ImageTensors":
        indices = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensors(self.images[indices], self.labels[indices], self.normalization)


@dataclass
class Splits:
    train: Dataset  # statistics and training draw from here
    test: Dataset  # evaluation only: never used to score or accept a step
    num_classes: int
    name: str


def batches(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, workers: int = 0,
            shard: tuple[int, int] = (0, 1), device=None):
    """Yield (images, labels) batches; in-memory datasets are sliced without a per-sample loop.
    `shard=(rank, world)` yields only batches rank, rank+world, ...: the same batches as one process
    would make, dealt round-robin. With `device` the batches arrive there: in-memory images travel
    as uint8 (a quarter of the bytes of floats), from pinned memory to a GPU, and become floats there."""
    rank, world = shard
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    mine = [order[s:s + batch_size] for s in range(rank * batch_size, n, world * batch_size)]
    pin = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if isinstance(dataset, ImageTensors):
        for idx in mine:
            x, y = dataset.images[idx], dataset.labels[idx]
            if device is not None:
                if pin:  # a pinned source lets the copy overlap the previous batch's compute
                    x, y = x.pin_memory(), y.pin_memory()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            yield dataset.normalization(x), y
        return
    # One loader over this rank's batches, in order, so workers can prefetch across batch boundaries.
    loader = DataLoader(Subset(dataset, torch.cat(mine).tolist() if mine else []), batch_size=batch_size,
                        num_workers=workers, pin_memory=pin)
    for x, y in loader:
        yield (x, y) if device is None else (x.to(device, non_blocking=True), y.to(device, non_blocking=True))


def default_workers(dataset: Dataset) -> int:
    """DataLoader workers for a dataset: none for in-memory tensors (slicing is all they need); for
    image files, the cores of this machine shared among its ranks (torchrun's LOCAL_WORLD_SIZE), one
    left to the process that runs the model, at most 8."""
    if isinstance(dataset, ImageTensors):
        return 0
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, (os.cpu_count() or 1) // local - 1))


def subset(dataset: Dataset, n: int | None, seed: int, skip: int = 0) -> Dataset:
    """A deterministic random subset of n samples (all when n is None), after `skip` others of the
    same permutation: two calls with different skips give disjoint subsets."""
    total = len(dataset)
    if n is None:
        n = total - skip
    if n <= 0 or skip + n > total:
        raise ConnectomeError(f"asked for {n:,} samples (after {skip:,}) of a split of {total:,}")
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[skip:skip + n].sort().values
    return dataset.subset(idx) if isinstance(dataset, ImageTensors) else Subset(dataset, idx.tolist())


# --- IDX (MNIST family) -------------------------------------------------------------------------

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


_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        for candidate in (folder / name, folder / "raw" / name):
            if candidate.is_file():
                return candidate
    return None


def _idx_complete(folder: Path) -> bool:
    return all(_find_idx(folder, s) for pair in _IDX_FILES.values() for s in pair)


def _load_idx_folder(folder: Path) -> tuple[ImageTensors, ImageTensors]:
    out = []
    for split in ("train", "test"):
        images, labels = (read_idx(_find_idx(folder, s)) for s in _IDX_FILES[split])
        out.append(ImageTensors(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.copy())))
    return out[0], out[1]


def _mnist_family(kind: str, path: str | None) -> Splits:
    import torchvision.datasets as tvd

    tv_class = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}[kind]
    cache = CACHE / tv_class.__name__ / "raw"
    if path:
        candidates = [Path(path)]
    else:
        candidates = [DEBIAN_FASHION_MNIST] if kind == "fashion-mnist" else []
        candidates.append(cache)
    for folder in candidates:
        if _idx_complete(folder):
            return Splits(*_load_idx_folder(folder), 10, kind)
    if path:
        raise ConnectomeError(f"{path} has no {kind} IDX files (expected {', '.join(_IDX_FILES['train'])}, "
                              f"{', '.join(_IDX_FILES['test'])}, optionally .gz)")
    try:
        tv_class(root=str(CACHE), train=True, download=True)
    except Exception as e:  # torchvision raises RuntimeError or URLError after trying every mirror
        raise ConnectomeError(f"no local {kind} and the download failed ({_reason(e)}): put the four IDX "
                              f"files in {cache} or pass --data {kind}:/path/to/folder") from None
    return Splits(*_load_idx_folder(cache), 10, kind)


# --- CIFAR-10, binary release -------------------------------------------------------------------

def _read_cifar_bin(files: list[Path]) -> ImageTensors:
    # Each record: one label byte, then 3072 bytes of a 32x32 image, red, green, blue planes.
    raw = np.concatenate([np.fromfile(f, dtype=np.uint8) for f in files])
    if raw.size % 3073:
        raise ConnectomeError(f"CIFAR-10 binary files {files[0].parent} are truncated")
    raw = raw.reshape(-1, 3073)
    images = torch.from_numpy(raw[:, 1:].copy()).view(-1, 3, 32, 32)
    return ImageTensors(images, torch.from_numpy(raw[:, 0].astype(np.int64)))


def _cifar_folder(root: Path) -> Path | None:
    for folder in (root, root / "cifar-10-batches-bin"):
        if all((folder / f"data_batch_{i}.bin").is_file() for i in range(1, 6)) and (folder / "test_batch.bin").is_file():
            return folder
    return None


def _cifar10(path: str | None) -> Splits:
    root = Path(path) if path else CACHE / "cifar10"
    folder = _cifar_folder(root)
    if folder is None and path is None:
        from torchvision.datasets.utils import download_and_extract_archive
        try:
            download_and_extract_archive(CIFAR10_BINARY_URL, str(root), md5=CIFAR10_BINARY_MD5)
        except Exception as e:
            raise ConnectomeError(f"no local CIFAR-10 and the download of {CIFAR10_BINARY_URL} failed "
                                  f"({_reason(e)}): extract it into {root} or pass --data cifar10:/path") from None
        folder = _cifar_folder(root)
    if folder is None:
        raise ConnectomeError(f"{root} holds no CIFAR-10 binary batches (data_batch_1.bin ... test_batch.bin)")
    train = _read_cifar_bin([folder / f"data_batch_{i}.bin" for i in range(1, 6)])
    return Splits(train, _read_cifar_bin([folder / "test_batch.bin"]), 10, "cifar10")


def _image_folder(kind: str, path: str | None, transforms) -> Splits:
    from torchvision.datasets import ImageFolder

    if not path:
        raise ConnectomeError(f"--data {kind}:PATH needs a folder with train/ and val/ subfolders")
    root = Path(path)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ConnectomeError(f"{root / split} does not exist: {kind}:PATH needs train/ and val/ class folders")
    train, val = (ImageFolder(str(root / s), transform=transforms) for s in ("train", "val"))
    if train.classes != val.classes:
        raise ConnectomeError(f"{root}: train/ and val/ have different class folders")
    return Splits(train, val, len(train.classes), kind)


KINDS = ("mnist", "fashion-mnist", "cifar10", "imagenet", "folder")


def load_dataset(spec: str, transforms=None) -> Splits:
    """Resolve a data spec. `transforms` (the model's eval transforms) apply to image folders only."""
    kind, _, path = spec.partition(":")
    kind = kind.lower().replace("_", "-")
    kind = {"fmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(kind, kind)
    if kind not in KINDS:
        raise ConnectomeError(f"unknown data spec {spec!r}: use one of {', '.join(k + '[:PATH]' for k in KINDS)}")
    path = path or None
    if path and not Path(path).exists():
        raise ConnectomeError(f"data folder {path} does not exist")
    if kind in ("mnist", "fashion-mnist"):
        return _mnist_family(kind, path)
    if kind == "cifar10":
        return _cifar10(path)
    return _image_folder(kind, path, transforms)

