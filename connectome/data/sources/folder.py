"""`folder:PATH`: image files in PATH/train/ and PATH/val/ class folders, numbered 0..N-1, read
through the model's eval transforms (connectome.data.folders)."""

from pathlib import Path

from connectome.data.source import DATA_SOURCES, DataSource


@DATA_SOURCES.register
class Folder(DataSource):
    kind = "folder"
    needs_path = True
    photographs = True

    def check_path(self, path):
        from connectome.data.folders import check_layout
        check_layout(self.kind, path)

    def load(self, path, transforms=None):
        from connectome.data.folders import numbered_folders
        return numbered_folders(self.kind, path, transforms)

    def sizes(self, path):
        from connectome.data.folders import folder_sizes
        return folder_sizes(Path(path))
