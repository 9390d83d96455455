"""Jobs that are well-formed but impossible on this server, refused at submit time where the server
can know without running them: more weights to remove than the model has, more samples than the
data's split, a GPU on a server without one, a missing file, more work than the server gives one job
(connectome.serve.work).

What is cheap is checked: a model's prunable count comes from its architecture built without
weights (on the meta device where it can be, so nothing is allocated or downloaded), once per
(model, weights); a split's size from the IDX or CIFAR-10 files' sizes, or from an image folder's
file names. What cannot be known cheaply (a user's model, data to download) is left to the run,
which fails with one clear line.
"""

import os
import re
import struct
from functools import lru_cache
from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.serve import work
from connectome.serve.policy import SOURCE, Policy, data_kind
from connectome.sizes import parse_count


def check(s, policy: Policy, nproc: int) -> None:
    """Raise ConnectomeError naming the field when the settings `s` cannot run on this server."""
    from connectome.models.load import source_of

    _check_device(s.device, policy.gpus, nproc)
    source = source_of(s.model)
    if s.weights and not source.named_weights:
        raise ConnectomeError(f"{SOURCE}: weights names torchvision weights; use weights_file for other models")
    if s.weights_file and not Path(s.weights_file).is_file():
        raise ConnectomeError(f"{SOURCE}: weights_file {s.weights_file} is not a file")
    missing = None if s.weights_file else source.weights_missing(s.model)
    if missing:
        raise ConnectomeError(f"{SOURCE}: model {s.model} needs weights_file on this server: {missing}")
    sizes = _check_data(s, source.dataset(s.model))
    prunable = prunable_count(s.model, s.weights, tuple(s.include), tuple(s.exclude))
    if prunable == 0:
        raise ConnectomeError(f"{SOURCE}: include/exclude leave no prunable weights in {s.model}")
    target = None
    if prunable is not None:
        try:
            target = parse_count(s.remove, prunable)
        except ConnectomeError as e:
            if not s.remove.strip().endswith("%"):
                raise ConnectomeError(f"{SOURCE}: remove {e} of {s.model}") from None
    evaluated = s.eval_samples or (sizes[1] if sizes else None)
    work.check(s, policy, target, prunable, evaluated)


# --- device -----------------------------------------------------------------------------------------

_DEVICE = re.compile(r"auto|cpu|cuda(?::(\d+))?|(?:mps|xpu)(?::\d+)?")


def _check_device(device: str, gpus: int, nproc: int) -> None:
    m = _DEVICE.fullmatch(device)
    if not m:
        raise ConnectomeError(f"{SOURCE}: device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        if gpus == 0:
            raise ConnectomeError(f"{SOURCE}: device {device}: this server has no GPU")
        if m.group(1) is not None and int(m.group(1)) >= nproc:
            raise ConnectomeError(f"{SOURCE}: device {device}: a job sees its {nproc} GPU(s) as cuda:0"
                                  f"{f' to cuda:{nproc - 1}' if nproc > 1 else ''}")


# --- model ------------------------------------------------------------------------------------------

def prunable_count(model: str, weights: str | None, include: tuple = (), exclude: tuple = ()) -> int | None:
    """Weights of the conv and linear layers that include/exclude select (the run's prunable count,
    or more where a base weight is exactly zero); None where the server cannot build the model."""
    from connectome.pruning.flat import prunable_parameters

    module = architecture(model, weights)
    if module is None:
        return None
    return sum(p.numel() for p in prunable_parameters(module, include, exclude).values())


@lru_cache(maxsize=64)
def architecture(model: str, weights: str | None):
    """The model's architecture without weights, on the meta device (names and shapes only); None for
    a user's code (never imported by the server) or a model that does not build here."""
    import torch

    from connectome.models.load import source_of

    try:
        build = source_of(model).architecture(model, weights)
    except ConnectomeError as e:
        raise ConnectomeError(f"{SOURCE}: weights {weights!r}: {e}") from None
    if build is None:
        return None
    try:
        with torch.device("meta"):  # nothing allocated: most architectures build like this
            return build()
    except ConnectomeError:
        raise
    except Exception:
        pass
    try:  # some initialise with Python numbers read from tensors: build on the CPU, keep the shapes
        return build().to("meta")
    except ConnectomeError:
        raise
    except Exception:
        return None


# --- data -------------------------------------------------------------------------------------------

def _check_data(s, own_data: str | None) -> tuple[int, int] | None:
    """`own_data`: the data the model was made for, which a job without `data` runs on."""
    data = s.data if s.data is not None else own_data
    if data is None:
        raise ConnectomeError(f"{SOURCE}: data is required for {s.model} (e.g. imagenet:/path/to/imagenet)")
    parsed = data_kind(data)
    if parsed is None:
        from connectome.data import KINDS
        raise ConnectomeError(f"{SOURCE}: data {data!r} is not a data spec: use one of "
                              f"{', '.join(k + '[:PATH]' for k in KINDS)}")
    kind, path = parsed
    if path and not Path(path).exists():
        raise ConnectomeError(f"{SOURCE}: data folder {path} does not exist")
    if kind in ("imagenet", "folder") and not (path and all((Path(path) / d).is_dir() for d in ("train", "val"))):
        raise ConnectomeError(f"{SOURCE}: data {data}: {kind}:PATH needs a folder with train/ and val/ class folders")
    sizes = split_sizes(kind, path) or (None if path else work.RELEASES.get(kind))
    n_accept = max(2, int(round(s.calib_samples * s.accept_fraction)))
    if s.calib_samples - n_accept < 2:
        raise ConnectomeError(f"{SOURCE}: calib_samples {s.calib_samples} with accept_fraction {s.accept_fraction} "
                              f"leaves fewer than 2 samples for the statistics")
    if sizes is None:
        return None
    train, test = sizes
    if s.calib_samples > train:
        raise ConnectomeError(f"{SOURCE}: calib_samples {s.calib_samples:,} exceeds the {train:,} training samples of {data}")
    if s.eval_samples and s.eval_samples > test:
        raise ConnectomeError(f"{SOURCE}: eval_samples {s.eval_samples:,} exceeds the {test:,} evaluation samples of {data}")
    return sizes


def split_sizes(kind: str, path: str | None) -> tuple[int, int] | None:
    """(training, evaluation) samples of a data spec's folder where counting them is cheap, else None
    (no folder named: the server's own copy or a download, left to the run)."""
    if not path:
        return None
    try:
        if kind in ("mnist", "fashion-mnist"):
            return _idx_sizes(Path(path))
        if kind == "cifar10":
            return _cifar_sizes(Path(path))
        root = Path(path)
        return _folder_sizes(str(root), (root / "train").stat().st_mtime_ns, (root / "val").stat().st_mtime_ns)
    except (OSError, ValueError, EOFError, struct.error):
        return None


# The files' layouts, as the loaders read them (connectome.data): IDX label files start with a magic
# number and the sample count; a CIFAR-10 binary record is a label byte and a 32x32x3 image.
_IDX_LABELS = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}
_IDX_IMAGES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
_CIFAR_RECORD = 1 + 32 * 32 * 3


def _idx_sizes(folder: Path) -> tuple[int, int] | None:
    import gzip

    from connectome.data.mnist import find_idx

    if not all(find_idx(folder, stem) for stem in (*_IDX_LABELS.values(), *_IDX_IMAGES)):
        return None  # the run says what is missing
    counts = []
    for stem in (_IDX_LABELS["train"], _IDX_LABELS["test"]):
        labels = find_idx(folder, stem)
        with (gzip.open if labels.suffix == ".gz" else open)(labels, "rb") as f:
            counts.append(struct.unpack(">4xI", f.read(8))[0])
    return counts[0], counts[1]


def _cifar_sizes(root: Path) -> tuple[int, int] | None:
    train = [f"data_batch_{i}.bin" for i in range(1, 6)]
    for folder in (root, root / "cifar-10-batches-bin"):
        if all((folder / n).is_file() for n in (*train, "test_batch.bin")):
            return (sum((folder / n).stat().st_size for n in train) // _CIFAR_RECORD,
                    (folder / "test_batch.bin").stat().st_size // _CIFAR_RECORD)
    return None


@lru_cache(maxsize=16)
def _folder_sizes(root: str, train_mtime: int, val_mtime: int) -> tuple[int, int] | None:
    """Images of an image folder's train/ and val/, counted as torchvision's ImageFolder lists them
    (file names only: nothing is opened). Cached while the split folders are unchanged."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    sizes = []
    for split in ("train", "val"):
        folder = os.path.join(root, split)
        try:
            _, class_to_idx = find_classes(folder)
            sizes.append(len(make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)))
        except (FileNotFoundError, OSError):
            return None
    return sizes[0], sizes[1]
