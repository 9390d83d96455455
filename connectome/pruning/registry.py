"""Methods by name, filled by the `register` decorator of each method's module.

The table lives below the methods so that the settings, which the methods read, can ask it what a
method reads (connectome.pruning.settings) without importing the methods: a lookup imports the
package that registers them (connectome.pruning.methods) by name, once.
"""

from importlib import import_module

from connectome.errors import ConnectomeError


class Registry:
    """Classes by their `name`, registered by the modules of `package` when it is imported."""

    def __init__(self, what: str, package: str):
        self.what, self.package = what, package
        self._classes: dict[str, type] = {}

    def register(self, cls: type) -> type:
        self._classes[cls.name] = cls
        return cls

    def _all(self) -> dict[str, type]:
        import_module(self.package)  # registers every class; a no-op once imported
        return self._classes

    def names(self) -> list[str]:
        return list(self._all())

    def classes(self) -> list[type]:
        return list(self._all().values())

    def get(self, name: str) -> type:
        classes = self._all()
        if name not in classes:
            raise ConnectomeError(f"unknown {self.what} {name!r}: choose from {', '.join(classes)}")
        return classes[name]


METHODS = Registry("method", "connectome.pruning.methods")
