"""connectome: prune pretrained networks by zeroing weights, never retraining a survivor.

The packages, from the command line down: cli, serve, lottery and weights, pruning, models, data.
A published pruned model loads with `connectome.weights.load(name)`.
"""

__version__ = "0.1.0"
