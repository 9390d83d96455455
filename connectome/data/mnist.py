"""MNIST and Fashion-MNIST from their IDX files (a local folder, Debian's package, or the cache),
downloaded through torchvision when none is found; held in memory as ImageTensors."""

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

import connectome.data.paths as paths
from connectome.data.splits import Splits
from connectome.data.tensors import ImageTensors
from connectome.errors import ConnectomeError, reason

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
NUM_CLASSES = 10  # both MNIST and Fashion-MNIST


def read_idx(path: Path, rank: int | None = None) -> np.ndarray:
    """An IDX file (optionally gzipped) of unsigned bytes, of `rank` when given: a big-endian header
    (two zero bytes, the dtype code 0x08, the rank), the dims, then the data. It is read as far as its
    header says and one byte more, so a header that lies costs no more than the file holds, and gzip
    checks its CRC. Anything wrong with the file is a ConnectomeError naming it."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise ConnectomeError(f"{path} is {'empty' if not head else 'shorter than an IDX header'}: "
                                      f"replace it with a complete copy")
            zero, dtype_code, got = struct.unpack(">HBB", head)
            if zero != 0 or dtype_code != 0x08:
                raise ConnectomeError(f"{path} is not an unsigned-byte IDX file (its header starts {head.hex()})")
            if rank is not None and got != rank:
                raise ConnectomeError(f"{path} holds an array of rank {got}: this file must have rank {rank}")
            dims = f.read(4 * got)
            if len(dims) < 4 * got:
                raise ConnectomeError(f"{path} is truncated inside its header: replace it with a complete copy")
            shape = struct.unpack(f">{got}I", dims)
            n = math.prod(shape)
            data = _read_exactly(f, n)
            extra = f.read(1)
    except (OSError, EOFError, zlib.error) as e:  # gzip: EOFError when truncated, zlib.error or OSError when damaged
        if getattr(e, "strerror", None):  # the system's reason: no permission, a folder, ...
            raise ConnectomeError(f"{path} cannot be read ({e.strerror})") from None
        raise ConnectomeError(f"{path} is not a whole gzip file ({reason(e)}): replace it with a good copy") from None
    if len(data) < n or extra:
        size = "truncated" if len(data) < n else "longer than its header says"
        raise ConnectomeError(f"{path} is {size} (header: shape {shape}, {n:,} bytes of data): "
                              f"replace it with a complete copy")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _read_exactly(f, n: int) -> bytes:
    """Up to n bytes in chunks: one read of n would allocate n bytes whatever the file holds."""
    chunks = []
    while n > 0 and (chunk := f.read(min(n, 1 << 24))):
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


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
        image_file, label_file = (find_idx(folder, s) for s in _IDX_FILES[split])
        images, labels = read_idx(image_file, 3), read_idx(label_file, 1)
        if len(images) != len(labels):
            raise ConnectomeError(f"{image_file} holds {len(images):,} images but {label_file} {len(labels):,} "
                                  f"labels: the two files must come from one release")
        if not images.size:
            raise ConnectomeError(f"{image_file} holds no images (shape {images.shape})")
        if labels.max() >= NUM_CLASSES:
            raise ConnectomeError(f"{label_file} holds label {labels.max()}: labels are 0-{NUM_CLASSES - 1}")
        out.append(ImageTensors(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.copy())))
    return out[0], out[1]


def idx_release(kind: str, path: str | None, torchvision_class: str, local_copies: list[Path]) -> Splits:
    """An IDX release (MNIST's layout) from `path` when given, else from the first of `local_copies`
    or the download cache that holds it, else downloaded by torchvision.datasets' `torchvision_class`."""
    import torchvision.datasets as tvd

    tv_class = getattr(tvd, torchvision_class)
    cache = paths.CACHE / tv_class.__name__ / "raw"
    for folder in [Path(path)] if path else [*local_copies, cache]:
        if _idx_complete(folder):
            return Splits(*_load_idx_folder(folder), NUM_CLASSES, kind)
    if path:
        raise ConnectomeError(f"{path} has no {kind} IDX files (expected {', '.join(_IDX_FILES['train'])}, "
                              f"{', '.join(_IDX_FILES['test'])}, optionally .gz)")
    try:
        tv_class(root=str(paths.CACHE), train=True, download=True)
    except Exception as e:  # torchvision raises RuntimeError or URLError after trying every mirror
        raise ConnectomeError(f"no local {kind} and the download failed ({reason(e)}): put the four IDX "
                              f"files in {cache} or pass --data {kind}:/path/to/folder") from None
    return Splits(*_load_idx_folder(cache), NUM_CLASSES, kind)


def idx_sizes(folder: Path) -> tuple[int, int] | None:
    """(training, test) samples of an IDX folder, from the label files' headers (magic number, count);
    None where a file is missing or its header cannot be read: the load says what is wrong."""
    if not _idx_complete(folder):
        return None
    counts = []
    for split in ("train", "test"):
        labels = find_idx(folder, _IDX_FILES[split][1])
        try:
            with (gzip.open if labels.suffix == ".gz" else open)(labels, "rb") as f:
                counts.append(struct.unpack(">4xI", f.read(8))[0])
        except (OSError, EOFError, zlib.error, struct.error):
            return None
    return counts[0], counts[1]
