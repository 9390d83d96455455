"""`cifar10[:PATH]` (or `cifar-10`): the binary release from PATH, the cache or a download, or an
image-folder copy or a .tar.gz of one at PATH (connectome.data.cifar)."""

from pathlib import Path

from connectome.data.source import DATA_SOURCES, DataSource


@DATA_SOURCES.register
class CIFAR10(DataSource):
    kind = "cifar10"
    aliases = ("cifar-10",)
    release = (50000, 10000)

    def load(self, path, transforms=None):
        from connectome.data.cifar import cifar10
        return cifar10(path)

    def sizes(self, path):
        from connectome.data.cifar import cifar_sizes
        return cifar_sizes(Path(path))
