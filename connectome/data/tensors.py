"""Images held in memory as one uint8 tensor (ImageTensors), and the normalisation that makes them
floats batch by batch (Normalization), bit for bit as torchvision's transforms would."""

import torch
from torch.utils.data import Dataset


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
