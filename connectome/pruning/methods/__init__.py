"""Methods: how a mask is searched. Each is one module defining a `RunFolder` (methods.base) subclass,
registered by `@METHODS.register` (connectome.pruning.registry) and imported here:

    greedy    the connectome loop: adaptive steps on gradient statistics, ranked by a score
    learned   a mask trained over the frozen weights (the default, by measurement)
    one-shot  one ranking by a score on the dense model, cut at each count of the curve

Scores (connectome.pruning.scores) are the rankings greedy and one-shot use. A new method is one
module here and its name in the import below; it declares the settings it reads (`settings`), which
with the common ones make its runs' digest (connectome.pruning.settings).
"""

from connectome.pruning.methods import greedy, learned, one_shot  # noqa: F401  (each registers itself)
