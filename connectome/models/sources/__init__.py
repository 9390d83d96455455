"""The model sources, one short module each, registered on import in the order specs are matched:
timm:NAME first (its colon would otherwise read as user code), the project's names, torchvision's
names, and last package.module:function."""

from connectome.models.sources import timm, reference, lite0, torchvision, user  # noqa: F401  (order matters)
