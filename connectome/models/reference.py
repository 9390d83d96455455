"""Networks defined by the project: the Fashion-MNIST reference models and the lottery-ticket networks.

Each one starts with a `Preprocess` layer, so a checkpoint is self-contained: it takes raw
`ToTensor()` images in [0, 1] and does its own normalisation.
"""

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small

MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


class Preprocess(nn.Module):
    """Normalise, and repeat a grey channel when the network expects colour."""

    def __init__(self, mean, std, out_channels: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.out_channels = out_channels

    def forward(self, x):
        x = (x - self.mean) / self.std
        if self.out_channels and x.shape[1] != self.out_channels:
            x = x.expand(-1, self.out_channels, -1, -1).contiguous()  # convs are slow on stride-0 views
        return x


def lenet_300_100(stats=FASHION_MNIST_STATS, num_classes: int = 10) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998), the fully connected network of the lottery-ticket paper."""
    return nn.Sequential(
        Preprocess(*stats),
        nn.Flatten(),
        nn.Linear(784, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )


class GreyMobileNetV3Small(nn.Module):
    """torchvision's MobileNetV3-Small, unchanged, behind a layer that normalises grey images.

    `net` is a genuine `torchvision.models.MobileNetV3`: the weights under `net.` load into
    `torchvision.models.mobilenet_v3_small(num_classes=10)`. At 28x28 the last feature map is 1x1;
    a stride-1 stem would keep 2x2 but costs 2.5x the compute, too much for training on 2 CPU cores.
    """

    def __init__(self, stats=FASHION_MNIST_STATS, num_classes: int = 10):
        super().__init__()
        self.preprocess = Preprocess(*stats, out_channels=3)
        self.net = mobilenet_v3_small(num_classes=num_classes)

    def forward(self, x):
        return self.net(self.preprocess(x))


def _conv_net(channels: list[int], num_classes: int = 10) -> nn.Module:
    """Conv-2/4/6 of the lottery-ticket paper: 3x3 conv pairs, each pair followed by 2x2 max-pool,
    then fully connected 256, 256, 10 (Frankle & Carbin 2019, Figure 2; VGG-like)."""
    layers: list[nn.Module] = [Preprocess(*CIFAR10_STATS)]
    in_ch = 3
    for i, out_ch in enumerate(channels):
        layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU()]
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
        in_ch = out_ch
    side = 32 // 2 ** (len(channels) // 2)
    layers += [
        nn.Flatten(),
        nn.Linear(in_ch * side * side, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, num_classes),
    ]
    return nn.Sequential(*layers)


def conv2() -> nn.Module:
    return _conv_net([64, 64])


def conv4() -> nn.Module:
    return _conv_net([64, 64, 128, 128])


def conv6() -> nn.Module:
    return _conv_net([64, 64, 128, 128, 256, 256])


def glorot_normal_(model: nn.Module) -> nn.Module:
    """The paper's initialisation: Gaussian Glorot for weights, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return model


@dataclass(frozen=True)
class Architecture:
    build: Callable[[], nn.Module]
    dataset: str  # the data spec it was made for
    input_shape: tuple[int, int, int]
    about: str


ARCHITECTURES: dict[str, Architecture] = {
    "lenet_300_100": Architecture(lambda: lenet_300_100(FASHION_MNIST_STATS), "fashion-mnist", (1, 28, 28),
                                  "LeNet-300-100 for Fashion-MNIST (266k weights)"),
    "lenet_300_100_mnist": Architecture(lambda: lenet_300_100(MNIST_STATS), "mnist", (1, 28, 28),
                                        "LeNet-300-100 for MNIST, the lottery-ticket paper's network"),
    "mobilenet_v3_small_fmnist": Architecture(GreyMobileNetV3Small, "fashion-mnist", (1, 28, 28),
                                              "torchvision MobileNetV3-Small for Fashion-MNIST (1.5M weights)"),
    "conv2": Architecture(conv2, "cifar10", (3, 32, 32), "Conv-2 of the lottery-ticket paper"),
    "conv4": Architecture(conv4, "cifar10", (3, 32, 32), "Conv-4 of the lottery-ticket paper"),
    "conv6": Architecture(conv6, "cifar10", (3, 32, 32), "Conv-6 of the lottery-ticket paper"),
}
