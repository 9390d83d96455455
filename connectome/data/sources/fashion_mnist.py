"""`fashion-mnist[:PATH]` (or `fmnist`): MNIST's layout and loader, with Debian's package as a local copy."""

from connectome.data import paths
from connectome.data.source import DATA_SOURCES
from connectome.data.sources.mnist import MNIST


@DATA_SOURCES.register
class FashionMNIST(MNIST):
    kind = "fashion-mnist"
    aliases = ("fmnist",)
    torchvision_class = "FashionMNIST"

    def local_copies(self):
        return [paths.DEBIAN_FASHION_MNIST]  # read at call time: a test may point it elsewhere
