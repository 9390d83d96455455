"""Pruning a pretrained network by zeroing weights: settings, the flat weight vector and its mask,
gradient statistics, criteria, the loop state, step proposal and acceptance, the loop, results, and
methods compared side by side.

    from connectome.pruning import PruneSettings, prune
    prune(PruneSettings(model="lenet_300_100", remove="50%"), "runs/demo")
"""

__all__ = ["prune", "PruneSettings", "CompareSettings"]


def __getattr__(name):
    # Lazy, so that reading the settings (the command line's --help) does not load the whole engine.
    if name == "prune":
        from connectome.pruning.api import prune
        return prune
    if name in ("PruneSettings", "CompareSettings"):
        from connectome.pruning import settings
        return getattr(settings, name)
    raise AttributeError(name)
