"""`imagenet:PATH`: an image folder whose class folders are ImageNet-1k synsets (any subset of them),
labelled with their ImageNet-1k indices, so scores run over all 1,000 outputs (connectome.data.folders)."""

from connectome.data.source import DATA_SOURCES
from connectome.data.sources.folder import Folder


@DATA_SOURCES.register
class ImageNet(Folder):
    kind = "imagenet"

    def load(self, path, transforms=None):
        from connectome.data.folders import imagenet_folders
        return imagenet_folders(self.kind, path, transforms)
