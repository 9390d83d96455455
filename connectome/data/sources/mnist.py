"""`mnist[:PATH]`: MNIST's IDX files from PATH, the download cache, or a download."""

from pathlib import Path

from connectome.data.source import DATA_SOURCES, DataSource


@DATA_SOURCES.register
class MNIST(DataSource):
    kind = "mnist"
    release = (60000, 10000)
    torchvision_class = "MNIST"  # the torchvision.datasets class that downloads the release

    def local_copies(self) -> list[Path]:
        """Folders a system package installs the release to, tried before the cache."""
        return []

    def load(self, path, transforms=None):
        from connectome.data.mnist import idx_release
        return idx_release(self.kind, path, self.torchvision_class, self.local_copies())

    def sizes(self, path):
        from connectome.data.mnist import idx_sizes
        return idx_sizes(Path(path))
