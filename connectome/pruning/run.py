"""Transitional: the names that lived in the old pruning module, for code not yet moved to the new
modules (removed when nothing imports it)."""

from connectome.pruning.flat import DEFERRED, PRUNABLE_TYPES, FlatWeights, prunable_parameters  # noqa: F401
from connectome.pruning.loop import MAX_DEFERRALS, Run  # noqa: F401
from connectome.pruning.results import write_results  # noqa: F401
from connectome.pruning.settings import PruneSettings  # noqa: F401
from connectome.pruning.setup import Setup, prepare  # noqa: F401

SETTING_NAMES = {s.name for s in PruneSettings.specs()}
