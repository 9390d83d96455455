"""Decode the calibration subsets and the evaluation split of an image folder once into uint8 tensor
files (`--cache-calib DIR`).

Every step of a run reads the decision and acceptance subsets again, and every point of a curve the
evaluation split; decoding JPEGs each time, not the model, can then set the pace. A model's eval transform is split into its geometric part (decode, resize,
crop: file -> uint8 tensor), applied once here, and its normalisation ((x/255 - mean)/std), applied by
ImageTensors to whole batches on the device, with the same operations as torchvision, so the floats
equal those of the undivided transform. A file is keyed by a hash of the data spec, the chosen samples
(indices, files, labels), the geometric transform and the decoder versions: a different subset,
transform or library never reads a stale file. Later passes and later runs read the tensors.
"""

import copy
import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from connectome.io import folder_lock, save_state
from connectome.data.splits import default_workers
from connectome.data.tensors import ImageTensors, Normalization
from connectome.errors import ConnectomeError

FORMAT = "connectome.decoded/1"


class Geometric:
    """The decoding half of an eval transform: its own operations up to a uint8 (C, H, W) tensor."""

    def __init__(self, ops: list):
        self.ops = ops

    def __call__(self, img):
        from torchvision.transforms.functional import pil_to_tensor
        for op in self.ops:
            img = op(img)
        return img if isinstance(img, torch.Tensor) else pil_to_tensor(img)

    def __repr__(self):  # part of the cache key: the reprs of torchvision transforms carry their parameters
        return "Geometric(" + ", ".join(repr(op) for op in self.ops) + ")"


def split_transform(transform) -> tuple[Geometric, Normalization] | None:
    """(geometric part, normalization) of an eval transform that decodes, resizes and crops, then scales
    to [0, 1] and optionally normalises; None for anything else. Handles torchvision's weight presets
    (ImageClassification) and Compose pipelines of torchvision (v1 and v2) and timm."""
    from torchvision.transforms import v2
    from torchvision.transforms import transforms as v1
    from torchvision.transforms._presets import ImageClassification

    if isinstance(transform, ImageClassification):
        # The same functional calls as its forward(): F.resize, then F.center_crop, on the PIL image.
        ops = [v1.Resize(transform.resize_size, interpolation=transform.interpolation, antialias=transform.antialias),
               v1.CenterCrop(transform.crop_size)]
        return Geometric(ops), Normalization(transform.mean, transform.std)
    if not isinstance(transform, (v1.Compose, v2.Compose)):
        return None
    ops = list(transform.transforms)
    scaling = (v1.ToTensor, v2.ToTensor)  # PIL -> float in [0, 1], as pil_to_tensor then x/255
    to_uint8 = (v1.PILToTensor, v2.PILToTensor, v2.ToImage)
    try:  # timm's eval transforms end with this one: ToTensor for PIL images
        from timm.data.transforms import MaybeToTensor
        scaling += (MaybeToTensor,)
    except ImportError:
        pass
    cut = next((i for i, op in enumerate(ops) if isinstance(op, scaling + to_uint8)), None)
    if cut is None:
        return None
    rest, reciprocal = ops[cut + 1:], False
    if isinstance(ops[cut], to_uint8):  # then a cast to float that scales must follow
        if not rest or not _scales_to_float(rest[0]):
            return None
        reciprocal = isinstance(rest[0], v2.ToDtype)  # v2 multiplies by 1/255, v1 divides by 255
        rest = rest[1:]
    mean = std = None
    if rest and isinstance(rest[0], (v1.Normalize, v2.Normalize)):
        mean, std = (torch.as_tensor(v, dtype=torch.float32).tolist() for v in (rest[0].mean, rest[0].std))
        rest = rest[1:]
    return (Geometric(ops[:cut]), Normalization(mean, std, reciprocal)) if not rest else None


def _scales_to_float(op) -> bool:
    from torchvision.transforms import v2
    from torchvision.transforms import transforms as v1
    if isinstance(op, v1.ConvertImageDtype):
        return op.dtype == torch.float32
    if isinstance(op, v2.ToDtype):
        return op.dtype == torch.float32 and op.scale
    return False


def _key(spec: str, base: Dataset, indices: list[int], geometric: Geometric) -> str:
    import PIL
    import torchvision

    samples = [base.samples[i] for i in indices]
    record = {"format": FORMAT, "spec": spec, "root": str(Path(base.root).resolve()), "indices": indices,
              "files": [os.path.relpath(p, base.root) for p, _ in samples], "labels": [c for _, c in samples],
              "transform": repr(geometric), "torchvision": torchvision.__version__, "pillow": PIL.__version__}
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()


def _decode(base: Dataset, indices: list[int], geometric: Geometric, workers: int, progress: bool):
    ds = copy.copy(base)  # the same files and loader, only the transform differs
    ds.transform, ds.target_transform = geometric, None
    first, _ = ds[indices[0]]
    if not isinstance(first, torch.Tensor) or first.dtype != torch.uint8 or first.ndim != 3:
        raise ConnectomeError(f"the geometric part of the transform gives {type(first).__name__} "
                              f"{getattr(first, 'dtype', '')}, not a uint8 (C, H, W) tensor: --cache-calib cannot use it")
    images = torch.empty((len(indices), *first.shape), dtype=torch.uint8)
    labels = torch.empty(len(indices), dtype=torch.long)
    done = 0
    bar = tqdm(total=len(indices), desc="decoding", unit="img", disable=not progress, leave=False)
    try:
        for x, y in DataLoader(Subset(ds, indices), batch_size=64, num_workers=workers):
            images[done:done + len(y)], labels[done:done + len(y)] = x, y
            done += len(y)
            bar.update(len(y))
    except RuntimeError as e:
        if "equal size" not in str(e):
            raise
        raise ConnectomeError(f"decoded images differ in size ({e}): the transform must crop to one size") from None
    bar.close()
    return images, labels


def decoded(subset: Dataset, geometric: Geometric, normalization: Normalization, folder: str | Path, spec: str,
            workers: int | None = None, progress: bool = False) -> ImageTensors:
    """`subset` (a Subset of an image folder) as ImageTensors, decoded once into a file in `folder`.
    One process decodes while the others (torchrun's ranks, other runs) wait on the folder's lock."""
    if not isinstance(subset, Subset) and hasattr(subset, "samples"):  # a whole split, as evaluation uses it
        subset = Subset(subset, list(range(len(subset))))
    if not isinstance(subset, Subset) or not hasattr(subset.dataset, "samples"):
        raise ConnectomeError("--cache-calib works on image folders (imagenet:PATH, folder:PATH) only")
    base, indices = subset.dataset, [int(i) for i in subset.indices]
    key = _key(spec, base, indices, geometric)
    folder = Path(folder)
    path = folder / f"decoded-{key[:24]}.safetensors"
    if not path.exists():
        with folder_lock(folder, on_wait=lambda: print(f"waiting for the process decoding into {folder}", file=sys.stderr)):
            if not path.exists():  # another process may have written it while this one waited
                images, labels = _decode(base, indices, geometric, default_workers(subset) if workers is None else workers,
                                         progress)
                save_state(path, {"images": images, "labels": labels},
                           {"format": FORMAT, "key": key, "spec": spec, "samples": len(indices), "transform": repr(geometric)})
    from safetensors.torch import load_file
    t = load_file(str(path))
    return ImageTensors(t["images"], t["labels"], normalization)


def cache_calibration(setup, folder: str | Path, workers: int | None = None, progress: bool = False):
    """The setup with its decision and acceptance subsets and its evaluation split read from decoded
    tensor files; unchanged for datasets already held as tensors (MNIST family, CIFAR-10)."""
    if all(isinstance(d, ImageTensors) for d in (setup.decision, setup.accept, setup.evaluation)):
        return setup
    transform = setup.loaded.transforms
    parts = split_transform(transform)
    if parts is None:
        raise ConnectomeError(f"--cache-calib cannot split the model's transform into decoding and normalisation "
                              f"({type(transform).__name__}): it takes torchvision presets and Compose pipelines "
                              f"of resize/crop, to-tensor, scale and normalize")
    spec = setup.settings.data or setup.loaded.dataset
    return replace(setup, decision=decoded(setup.decision, *parts, folder, spec, workers, progress),
                   accept=decoded(setup.accept, *parts, folder, spec, workers, progress),
                   evaluation=decoded(setup.evaluation, *parts, folder, spec, workers, progress))
