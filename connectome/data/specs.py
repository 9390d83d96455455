"""Data specs, `KIND[:PATH]`, resolved to Splits through the source of their kind
(connectome.data.sources): `mnist`, `fashion-mnist`, `cifar10` (in memory, downloaded through
torchvision when no local copy exists and a network allows), `imagenet:PATH` and `folder:PATH` (image
files through the model's eval transforms)."""

from pathlib import Path

import connectome.data.sources  # noqa: F401  (registers every data source)
from connectome.data.source import DATA_SOURCES, DataSource, source_and_path
from connectome.errors import ConnectomeError

KINDS = tuple(DATA_SOURCES)  # the built-in kinds, for connectome.serve.feasible until it asks the table


def parse_spec(spec: str) -> tuple[str, str | None]:
    """(kind, path or None); unknown kinds refused."""
    source, path = source_and_path(spec)
    return source.kind, path


def check_spec(spec: str) -> tuple[DataSource, str | None]:
    """(source, PATH or None) of a spec whose PATH exists and has what its kind wants, seen without
    reading a file: a job is checked by this before it is stored, a load before it reads."""
    source, path = source_and_path(spec)
    if path and not Path(path).exists():
        raise ConnectomeError(f"data folder {path} does not exist")
    source.check_path(path)
    return source, path


def load_dataset(spec: str, transforms=None):
    """Resolve a data spec. `transforms` (the model's eval transforms) apply to image files only."""
    source, path = check_spec(spec)
    return source.load(path, transforms)
