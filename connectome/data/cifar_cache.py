"""CIFAR-10 image files (connectome.data.cifar_files) decoded once into a safetensors file in the
data cache, so a later run reads four tensors instead of 60,000 images.

The file is named by a digest of the source's file list (an image folder: names, sizes, times; a
tarball: its sha256), the format and Pillow's version (another JPEG decoder may give other pixels):
a changed copy or decoder never reads a stale file. One process decodes while the others (a second
benchmark process, torchrun's ranks) wait on the cache folder's lock.
"""

import hashlib
import json
import sys
import time
from pathlib import Path

import connectome.data.paths as paths
from connectome.data.cifar_files import (SPLITS, archive_digest, archive_listing, decode_split, folder_digest,
                                         folder_listing, idle_workers, is_archive)
from connectome.data.splits import Splits
from connectome.data.tensors import ImageTensors
from connectome.io import folder_lock, save_state

FORMAT = "connectome.cifar10-images/1"


def cache_folder() -> Path:
    return paths.CACHE / "cifar10-images"


def _key(kind: str, digest: str) -> str:
    import PIL

    record = {"format": FORMAT, "source": kind, "files": digest, "pillow": PIL.__version__}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _decode(path: Path, listing) -> tuple[dict, float, int]:
    t0, workers = time.time(), idle_workers()
    archive = listing is None
    listing = listing or archive_listing(path)
    tensors = {}
    for split in SPLITS:
        where = f"{path}:{split}" if archive else str(path / split)  # a member of the tarball, or a file's own path
        tensors[f"{split}.images"], tensors[f"{split}.labels"] = decode_split(listing[split], where, workers)
    return tensors, time.time() - t0, workers


def cifar10_images(path: str | Path) -> Splits:
    """CIFAR-10 from an image folder or a .tar.gz of one, from the cache after the first time."""
    path = Path(path)
    archive = is_archive(path)
    listing = None if archive else folder_listing(path)  # a folder is listed (and checked) to be keyed
    key = _key("tar.gz" if archive else "folder", archive_digest(path) if archive else folder_digest(listing))
    folder = cache_folder()
    file = folder / f"cifar10-{key[:24]}.safetensors"
    tensors = None
    if not file.exists():
        try:
            lock = folder_lock(folder, on_wait=lambda: print(f"waiting for the process decoding into {folder}",
                                                             file=sys.stderr))
            with lock:
                if not file.exists():  # another process may have written it while this one waited
                    tensors, seconds, workers = _decode(path, listing)
                    save_state(file, tensors, {"format": FORMAT, "key": key, "source": str(path.resolve()),
                                               "decode_seconds": f"{seconds:.1f}", "decode_workers": workers,
                                               **{f"{s}_images": len(tensors[f"{s}.labels"]) for s in SPLITS}})
                    print(f"decoded {path} once in {seconds:.1f} s ({workers} process{'es' if workers > 1 else ''}) "
                          f"into {file}", file=sys.stderr)
        except OSError as e:  # a read-only or full cache: decode for this run alone
            print(f"cannot cache the decoded CIFAR-10 in {folder} ({e}); decoding for this run only", file=sys.stderr)
            tensors = tensors or _decode(path, listing)[0]
    if tensors is None:
        from safetensors.torch import load_file
        tensors = load_file(str(file))
    train, test = (ImageTensors(tensors[f"{s}.images"], tensors[f"{s}.labels"]) for s in SPLITS)
    return Splits(train, test, 10, "cifar10")
