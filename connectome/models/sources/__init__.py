"""The model sources, one module each: a `Source` subclass (connectome.models.source) decorated with
`@SOURCES.register`. Importing this package registers them all, by the line below; a new source is
one module here plus its name on that line, whose order is the order `connectome models` lists them
in (specs are matched whatever the order, the user-code fallback last)."""

from connectome.models.sources import reference, lite0, torchvision, timm, user  # noqa: F401  (registers them)
