"""connectome: prune pretrained networks by zeroing weights, never retraining a survivor."""

__version__ = "0.1.0"


def load(name: str, **kwargs):
    """A published pruned model by registry name, e.g. `connectome.load("lenet_300_100.connectome_50pct_fmnist")`
    (see `connectome.weights.load`). Imported on call, so `import connectome` stays light."""
    from connectome.weights import load as _load
    return _load(name, **kwargs)
