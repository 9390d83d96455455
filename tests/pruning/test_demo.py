"""`make demo`'s decisions, pinned. With the first version's rules (keep_descents and unknown_last off) the demo
recipe gives the mask it gave before the code was reorganised into packages (content digest recorded
from that code); with the default rule, the mask recorded when that rule was introduced."""

from connectome.pruning.api import prune
from connectome.pruning.mask import Mask
from connectome.pruning.settings import PruneSettings
from connectome.recipes import load_recipe

DEMO_MASK = "3dd83e52c420cecfb2c14a25b9317569615767d11a48eeb3c2f5e26206d59e37"


def test_demo_recipe_gives_the_recorded_mask(tmp_path):
    s = PruneSettings.from_mapping({**load_recipe("prune-lenet_300_100", "prune"), "device": "cpu",
                                    "keep_descents": False, "unknown_last": False})
    manifest = prune(s, tmp_path / "demo", progress=False)
    assert manifest["result"]["removed"] == 133_100
    assert Mask.load(tmp_path / "demo" / "mask.safetensors").digest() == DEMO_MASK
