"""Augmented training views of a batch: what a learned mask trains on when the calibration set is small.

A mask of millions of free scores fits a thousand images exactly as they are; the same images seen
through the transforms ImageNet classifiers are trained with (a random resized crop and a horizontal
flip, torchvision's RandomResizedCrop defaults: 8-100% of the area, aspect 3/4 to 4/3) give it views
it cannot memorise. The views are cut from the batch's floats after normalisation: cropping and
bilinear resizing are linear in the pixels, so they commute with the per-channel (x - mean) / std.

Each image draws its own crop; the draws are a function of `seed` alone, so a resumed run sees the
views an uninterrupted one saw.
"""

import torch


class TrainingViews:
    """Random resized crop (to the batch's own size) and horizontal flip, one draw per image."""

    def __init__(self, scale: tuple[float, float] = (0.08, 1.0)):
        self.scale = scale

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        from torchvision.transforms import v2

        if x.ndim != 4:  # flat inputs (an MLP's) have no geometry to crop
            return x
        views = v2.Compose([v2.RandomResizedCrop(tuple(x.shape[-2:]), scale=self.scale, antialias=True),
                            v2.RandomHorizontalFlip()])
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the caller's random stream stays untouched
            torch.manual_seed(seed)
            return torch.stack([views(image) for image in x])

    def __repr__(self):
        return f"TrainingViews(scale={self.scale})"
