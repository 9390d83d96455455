"""The networks of the lottery experiment: which ones, how each is built, its seeded initialisation,
and the kind (conv, fc, output) of each prunable weight, which decides the rate it is pruned at."""

import torch
from torch import nn

from connectome.models.reference import (ARCHITECTURES, FASHION_MNIST_STATS, MNIST_STATS, Architecture,
                                         glorot_normal_, lenet_300_100)
from connectome.pruning.flat import prunable_parameters

MODELS = ("lenet_300_100", "lenet_300_100_mnist", "conv2", "conv4", "conv6")
LENET_STATS = {"mnist": MNIST_STATS, "fashion-mnist": FASHION_MNIST_STATS}


def architecture(name: str) -> Architecture:
    """What the network was made for (its default data, its input shape)."""
    # lenet_300_100 is the Fashion-MNIST reference model; here it trains on MNIST unless told otherwise.
    return ARCHITECTURES["lenet_300_100_mnist" if name == "lenet_300_100" else name]


def build(name: str, data_name: str) -> nn.Module:
    if name.startswith("lenet_300_100"):
        # The network normalises inside itself: with the statistics of the data it is trained on.
        return lenet_300_100(LENET_STATS.get(data_name, MNIST_STATS))
    return ARCHITECTURES[name].build()


def initial_state(name: str, data_name: str, seed: int) -> dict[str, torch.Tensor]:
    """Gaussian Glorot weights and zero biases, from a seed and nothing else."""
    # fork_rng: drawing an initialisation (a control's, mid-run) must not move the global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = glorot_normal_(build(name, data_name))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def layer_kinds(model: nn.Module) -> dict[str, str]:
    """conv, fc or output for each prunable weight: the paper prunes each kind at its own rate."""
    modules = dict(model.named_modules())
    kinds = {n: "conv" if isinstance(modules[n.rpartition(".")[0]], nn.Conv2d) else "fc"
             for n in prunable_parameters(model)}
    kinds[[n for n, k in kinds.items() if k == "fc"][-1]] = "output"
    return kinds
