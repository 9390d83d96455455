"""The learned mask, then delete-and-restore from it (--restore-cycles with --method learned)."""

import json

from connectome.pruning.api import prune
from connectome.pruning.mask import Mask
from connectome.pruning.settings import PruneSettings
from connectome.pruning.verify import verify

BASE = {"model": "lenet_300_100", "data": "fashion-mnist", "remove": "30%", "method": "learned",
        "calib_samples": 1000, "batch_size": 250, "learn_epochs": 2, "learn_points": 2, "device": "cpu", "seed": 0}


def settings(**kw):
    return PruneSettings.from_mapping({**BASE, **kw})


def test_restore_cycles_swap_from_the_learned_mask(tmp_path):
    learned = prune(settings(), tmp_path / "learned", progress=False)
    swapped = prune(settings(restore_cycles=3), tmp_path / "swapped", progress=False)
    target = learned["result"]["target"]
    assert swapped["result"]["removed"] == learned["result"]["removed"] == target  # swaps keep the count
    log = [json.loads(line) for line in (tmp_path / "swapped" / "log.jsonl").read_text().splitlines()]
    phases = [r["phase"] for r in log]
    assert phases[0] == "dense" and phases.count("learned") == 2 and phases.count("swap") >= 3
    kept = [r for r in log if r["phase"] == "swap" and r["accepted"]]
    assert len(kept) == 3 and all(r["restored"] > 0 and r["size"] == r["restored"] for r in kept)
    # The swaps started from exactly the learned run's mask: its rows are the same, and the mask moved.
    plain = [json.loads(line) for line in (tmp_path / "learned" / "log.jsonl").read_text().splitlines()]
    assert [r["eval_loss"] for r in log[:3]] == [r["eval_loss"] for r in plain]
    a = Mask.load(tmp_path / "learned" / "mask.safetensors")
    b = Mask.load(tmp_path / "swapped" / "mask.safetensors")
    assert a.digest() != b.digest()
    assert verify(tmp_path / "swapped").ok


def test_swaps_of_a_learned_mask_resume_to_the_same_mask(tmp_path):
    whole = prune(settings(restore_cycles=2), tmp_path / "whole", progress=False)
    seen = []

    class Stop(Exception):
        pass

    def stop_in_the_swaps(row):
        seen.append(row)
        if row["phase"] == "swap":
            raise Stop  # after the loop's state replaced the trainer's in the folder

    try:
        prune(settings(restore_cycles=2), tmp_path / "cut", progress=False, on_step=stop_in_the_swaps)
    except Stop:
        pass
    assert any(r["phase"] == "swap" for r in seen)
    resumed = prune(settings(restore_cycles=2), tmp_path / "cut", resume=True, progress=False)
    assert resumed["result"]["removed"] == whole["result"]["removed"]
    assert (Mask.load(tmp_path / "cut" / "mask.safetensors").digest()
            == Mask.load(tmp_path / "whole" / "mask.safetensors").digest())
