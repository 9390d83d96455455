"""The data sources, one module each: a `DataSource` subclass (connectome.data.source) decorated with
`@DATA_SOURCES.register`. Importing this package registers them all, by the line below; a new data
kind is one module here plus its name on that line, whose order is the order errors list the kinds in."""

from connectome.data.sources import mnist, fashion_mnist, cifar10, folder, imagenet  # noqa: F401  (registers them)
