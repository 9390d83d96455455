"""connectome: prune pretrained networks by zeroing weights, never retraining a survivor."""

__version__ = "0.1.0"
