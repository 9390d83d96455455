"""One registry style for everything chosen by name: methods, scores, model sources, data kinds,
lottery strategies. A new one is one class under `@TABLE.register`, as timm's `register_model`.

A Registry is a read-only Mapping (`in`, `[]`, iteration in registration order, `len`, `.get`,
`.items`), so code that reads a table reads a dict. Only `register` writes to it, and it refuses a
name (or alias) taken twice, so two modules never silently shadow each other.
"""

from collections.abc import Mapping
from importlib import import_module

from connectome.errors import ConnectomeError


class UnknownName(ConnectomeError, KeyError):
    """A name no entry has. A KeyError, so Mapping's `in` and `.get` work; a ConnectomeError, so
    `TABLE[user_input]` reaches the user as one line."""

    __str__ = Exception.__str__  # KeyError's would quote the message


class Registry(Mapping):
    """Entries by the `key` attribute of their class, in registration order.

    instance: hold one instance of each class (sources, asked questions) rather than the class
        (methods, scores, strategies, built per run with their settings).
    package: imported on first read, registering every entry; for a table that code below its
        entries reads (the pruning settings read the methods, which import the settings).
    """

    def __init__(self, what: str, key: str = "name", instance: bool = False, package: str | None = None):
        self.what, self.key, self.instance, self.package = what, key, instance, package
        self._entries: dict = {}  # name -> entry
        self._aliases: dict[str, str] = {}  # alias -> name

    def register(self, cls: type) -> type:
        """Class decorator: enter `cls` (or its instance) under its key and its `aliases`."""
        name = getattr(cls, self.key)
        names = (name, *getattr(cls, "aliases", ()))
        taken = [n for n in names if n in self._entries or n in self._aliases]
        if taken:
            raise ValueError(f"{self.what} {name!r} is registered twice: {', '.join(taken)} already taken")
        self._entries[name] = cls() if self.instance else cls
        self._aliases.update({alias: name for alias in names[1:]})
        return cls

    def unregister(self, name: str) -> None:
        """Remove an entry and its aliases: for a test that registers one for its length."""
        del self._entries[name]
        self._aliases = {a: n for a, n in self._aliases.items() if n != name}

    def _table(self) -> dict:
        if self.package:
            import_module(self.package)  # registers every entry; a no-op once imported
        return self._entries

    def __getitem__(self, name: str):
        table = self._table()
        name = self._aliases.get(name, name)
        if name not in table:
            raise UnknownName(f"unknown {self.what} {name!r}: choose from {', '.join(table)}")
        return table[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"
