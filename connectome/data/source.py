"""A data source and the table of them, as model sources are (connectome.models.source).

A source is one kind of data spec, `KIND[:PATH]` (`mnist`, `cifar10`, `imagenet:PATH`, ...), and
answers every question the rest of the project asks about its data: its names, whether it needs a
PATH, how a PATH is checked cheaply and its samples counted without reading them, the sizes of its
standard release, how it loads as Splits, and whether it holds photographs. Code outside
connectome.data asks the source of a spec (`data_source_of`) rather than testing its kind, so a new
data kind is one module with one `@DATA_SOURCES.register` class in connectome.data.sources.

This module holds the base and the table only; it imports nothing of the project but its errors and
the registry, so Splits, below the sources, can name the source of what it holds.
"""

from connectome.errors import ConnectomeError
from connectome.registry import Registry


class DataSource:
    """The base of every data source: defaults for a source that has nothing to say on a question."""

    kind: str  # the spec's KIND, the table's key, and `Splits.name` of what it loads
    aliases: tuple[str, ...] = ()  # other spellings of KIND a spec may use
    needs_path: bool = False  # only `KIND:PATH`: the source has no copy of its own to fall back on
    # Full-size photographs: a learned mask trains on random crops and flips of them
    # (connectome.data.augment), where small digit and CIFAR tensors are trained as they are.
    photographs: bool = False
    # (training, evaluation) samples of the standard release: what a spec without PATH loads.
    release: tuple[int, int] | None = None

    @property
    def spelling(self) -> str:
        """How a spec of this source is written, for the error on an unknown spec."""
        return f"{self.kind}:PATH" if self.needs_path else f"{self.kind}[:PATH]"

    def check_path(self, path: str | None) -> None:
        """Raise ConnectomeError where `path` (None: no PATH) cannot hold this data, seen without
        reading a file: before a job is stored, and before a load."""
        if self.needs_path and not path:
            raise ConnectomeError(f"{self.kind}:PATH needs a folder with train/ and val/ class folders")

    def load(self, path: str | None, transforms=None) -> "Splits":  # noqa: F821 (connectome.data.splits)
        """The data as Splits named `kind`; `transforms` (the model's eval transforms) apply to image
        files, which stay PIL images without them."""
        raise NotImplementedError

    def sizes(self, path: str) -> tuple[int, int] | None:
        """(training, evaluation) samples in the folder `path` where counting them is cheap (headers,
        file names), else None: the run finds out."""
        return None


# One instance of each by kind and its aliases, in registration order (the order errors list them).
DATA_SOURCES = Registry("data kind", key="kind", instance=True)


def source_and_path(spec: str) -> tuple[DataSource, str | None]:
    """(source, PATH or None) of a data spec `KIND[:PATH]`; KIND in any case, `_` for `-`, or an alias."""
    kind, _, path = spec.partition(":")
    kind = kind.lower().replace("_", "-")
    if kind not in DATA_SOURCES:  # the spellings, PATH included, say more than the registry's kinds
        raise ConnectomeError(f"unknown data spec {spec!r}: use one of "
                              f"{', '.join(s.spelling for s in DATA_SOURCES.values())}")
    return DATA_SOURCES[kind], path or None


def data_source_of(spec: str) -> DataSource:
    """The source of a data spec or of a bare kind (a `Splits.name`)."""
    return source_and_path(spec)[0]
