"""A dataset's two splits (Splits), seeded subsets of them, and the batches the passes read."""

import os
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from connectome.data.source import DataSource, data_source_of
from connectome.data.tensors import ImageTensors
from connectome.errors import ConnectomeError


@dataclass
class Splits:
    train: Dataset  # statistics and training draw from here
    test: Dataset  # evaluation only: never used to score or accept a step
    num_classes: int  # the model's outputs the labels index (1000 for an ImageNet subset)
    name: str  # the kind of its source

    @property
    def source(self) -> DataSource:
        """What its kind says of it (`photographs`, ...): asked, rather than its name tested."""
        return data_source_of(self.name)


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


def labels_of(dataset: Dataset) -> torch.Tensor:
    """Every sample's label, read without decoding an image (in-memory tensors, image folders and
    subsets of either)."""
    if isinstance(dataset, ImageTensors):
        return dataset.labels
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if hasattr(dataset, "targets"):  # torchvision's ImageFolder and its kin
        return torch.as_tensor(dataset.targets, dtype=torch.long)
    return torch.as_tensor([y for _, y in dataset], dtype=torch.long)


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
