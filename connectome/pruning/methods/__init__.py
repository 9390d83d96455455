"""Methods: how a mask is searched. Each is one module defining a `RunFolder` (methods.base) subclass:

    greedy    the connectome loop: adaptive steps on gradient statistics, ranked by a score
    learned   a mask trained over the frozen weights (the default, by measurement)
    one-shot  one ranking by a score on the dense model, cut at each count of the curve

Scores (connectome.pruning.scores) are the rankings greedy and one-shot use. A new method is one
module here and its line in METHODS. A method's module is imported when it is asked for: reading the
settings (the command line's --help, a job's validation) loads no engine.
"""

from importlib import import_module

METHODS = {"greedy": "greedy:Greedy", "learned": "learned:Learned", "one-shot": "one_shot:OneShot"}


def names() -> list[str]:
    return list(METHODS)


def get(name: str):
    """The method's class."""
    if name not in METHODS:
        from connectome.errors import ConnectomeError
        raise ConnectomeError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)
