"""CIFAR-10 as image files, the way Kaggle and many teams hand it around: an image folder
(PATH/train/<class>/*.png|jpg and PATH/test/<class>/*) or a .tar.gz of one, read without extracting.

The ten class folders must be CIFAR-10's, named as its release names them; their label is their
place in that list (airplane 0 ... truck 9), which is also their sorted order. Within a class the
files are taken in sorted name order, so a copy gives the same tensors wherever it lies. Every image
is decoded once, by PIL, into the uint8 (N, 3, 32, 32) tensors of the binary release.
"""

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import torch

from connectome.errors import ConnectomeError, reason

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
SUFFIXES = (".png", ".jpg", ".jpeg")
ARCHIVES = (".tar.gz", ".tgz")

# (label, name inside its class folder, encoded bytes or a path to them) per split
Listing = dict[str, list[tuple[int, str, object]]]


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVES)


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and any((path / s).is_dir() for s in SPLITS)


def _is_image(name: str) -> bool:
    # AppleDouble (._x.jpg) and other hidden files are not images of the set.
    return name.lower().endswith(SUFFIXES) and not name.startswith(".")


def _check_classes(where: str, found: set[str]) -> None:
    missing, extra = [c for c in CLASSES if c not in found], sorted(found - set(CLASSES))
    if missing or extra:
        what = "; ".join(p for p in (f"missing {', '.join(missing)}" if missing else "",
                                     f"not CIFAR-10 classes: {', '.join(extra)}" if extra else "") if p)
        raise ConnectomeError(f"{where} must hold exactly the ten CIFAR-10 class folders ({what})")


def _ordered(where: str, files: dict[str, list[tuple[str, object]]]) -> list[tuple[int, str, object]]:
    _check_classes(where, set(files))
    out = []
    for label, name in enumerate(CLASSES):
        if not files[name]:
            raise ConnectomeError(f"{where}/{name} holds no .png or .jpg images")
        out += [(label, f, src) for f, src in sorted(files[name], key=lambda t: t[0])]
    return out


# --- an image folder ------------------------------------------------------------------------------

def folder_listing(root: Path) -> Listing:
    """The files of both splits, as paths; refused in one line when a split or a class is not right."""
    out = {}
    for split in SPLITS:
        d = root / split
        if not d.is_dir():
            raise ConnectomeError(f"{d} does not exist: cifar10:PATH as images wants train/ and test/ class folders")
        classes = [e for e in os.scandir(d) if e.is_dir() and not e.name.startswith(".")]
        files = {c.name: [(e.name, Path(e.path)) for e in os.scandir(c.path) if e.is_file() and _is_image(e.name)]
                 for c in classes}
        out[split] = _ordered(str(d), files)
    return out


def folder_digest(listing: Listing) -> str:
    """A digest of the file list: names, sizes and modification times (a re-encoded or replaced file
    changes its size or its time; reading every byte would cost what decoding does)."""
    h = hashlib.sha256()
    for split, files in listing.items():
        for label, name, path in files:
            st = path.stat()
            h.update(f"{split}/{CLASSES[label]}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --- a tarball -------------------------------------------------------------------------------------

def archive_digest(path: Path) -> str:
    """The archive's sha256: it fixes the file list and every byte, and costs a tenth of a second
    for CIFAR-10's 19 MB, where listing the members means decompressing all of them."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def archive_listing(path: Path) -> Listing:
    """The images of both splits, read in one pass over the compressed stream (nothing extracted).
    Members are [PREFIX/]train|test/<class>/<file>, one PREFIX for all."""
    found: dict[str, dict[str, list]] = {s: {} for s in SPLITS}
    prefixes = set()
    try:
        with tarfile.open(path, "r|gz") as tf:  # a stream: members in archive order, each read once
            for m in tf:
                parts = m.name.strip("/").split("/")
                if m.isdir() and len(parts) >= 2 and parts[-2] in SPLITS:
                    found[parts[-2]].setdefault(parts[-1], [])  # an empty class folder still counts
                    continue
                if not m.isfile() or len(parts) < 3 or parts[-3] not in SPLITS or not _is_image(parts[-1]):
                    continue
                prefixes.add("/".join(parts[:-3]))
                found[parts[-3]].setdefault(parts[-2], []).append((parts[-1], tf.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ConnectomeError(f"{path} is not a readable .tar.gz ({e})") from None
    if len(prefixes) > 1:
        raise ConnectomeError(f"{path} holds train/ and test/ under several folders ({', '.join(sorted(prefixes))})")
    for split in SPLITS:
        if not found[split]:
            raise ConnectomeError(f"{path} holds no {split}/<class>/ images: cifar10:PATH as a tarball wants "
                                  f"[FOLDER/]train/<class>/*.jpg and test/<class>/*")
    return {split: _ordered(f"{path}:{split}", found[split]) for split in SPLITS}


# --- decoding --------------------------------------------------------------------------------------

def decode(source: object, where: str) -> np.ndarray:
    """One image (bytes or a path) as a (32, 32, 3) uint8 array; grey or palette images become RGB.
    The size is checked from the header, before any pixel is decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            if img.size != (32, 32):
                raise ConnectomeError(f"{where} is {img.size[0]}x{img.size[1]}: CIFAR-10 images are 32x32")
            return np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError as e:  # raised by open() from the header of a huge image
        raise ConnectomeError(f"{where} is too large to be a CIFAR-10 image ({reason(e)}); CIFAR-10 images are "
                              f"32x32") from None
    except ConnectomeError:
        raise
    except Exception as e:  # noqa: BLE001 damaged files make PIL's decoders raise OSError, ValueError, SyntaxError...
        raise ConnectomeError(f"{where} is not a readable image ({reason(e)})") from None


def _decode_chunk(files: list[tuple[int, str, object]], where: str) -> np.ndarray:
    return np.stack([decode(source, f"{where}/{CLASSES[label]}/{name}") for label, name, source in files])


def idle_workers() -> int:
    """Processes to decode with: the cores this process may use that the machine's load leaves idle,
    one kept for the caller, at most 8. On a shared machine that is busy (the load at or above the
    cores) it is 1: a pool would only take time from the jobs already running."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1 - round(os.getloadavg()[0])))


def decode_split(files: list[tuple[int, str, object]], where: str,
                 workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) in listing order; in a pool of `workers`
    processes (default: idle_workers()) when more than one is free."""
    workers = idle_workers() if workers is None else workers
    if workers > 1 and len(files) >= 2 * workers:
        from concurrent.futures import ProcessPoolExecutor

        size = -(-len(files) // (4 * workers))  # a few chunks per worker evens out their finishing times
        chunks = [files[i:i + size] for i in range(0, len(files), size)]
        with ProcessPoolExecutor(workers) as pool:
            images = np.concatenate(list(pool.map(_decode_chunk, chunks, [where] * len(chunks))))
    else:
        images = _decode_chunk(files, where) if files else np.empty((0, 32, 32, 3), dtype=np.uint8)
    labels = torch.tensor([label for label, _, _ in files], dtype=torch.long)
    # Channel planes, as the binary release stores them.
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels
