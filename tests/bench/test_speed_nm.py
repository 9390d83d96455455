"""bench/speed_nm.py's CPU part: the 2:4 masking it times (the timing itself needs a CUDA GPU)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from connectome.pruning.pattern import Pattern

SCRIPT = Path(__file__).resolve().parent.parent.parent / "bench" / "speed_nm.py"


def load():
    spec = importlib.util.spec_from_file_location("speed_nm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_apply_2_4_masks_convertible_linears_only_and_changes_no_survivor():
    speed_nm = load()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10), nn.Conv2d(64, 64, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert speed_nm.apply_2_4(model) == ["0"]
    w, w0 = model[0].weight, before["0.weight"]
    assert Pattern(2, 4).holds({"w": w}) == [] and int((w != 0).sum()) == w.numel() // 2
    assert bool(((w == w0) | (w == 0)).all())
    # The two that stay are the two largest of each group of 4.
    kept = (w.reshape(-1, 4) != 0)
    top = w0.reshape(-1, 4).abs().argsort(1)[:, 2:]
    assert bool(kept.gather(1, top).all())
    for k in ("0.bias", "2.weight", "2.bias", "3.weight"):  # 10 rows, a conv: not convertible
        assert torch.equal(model.state_dict()[k], before[k])


def test_without_a_gpu_it_says_so_in_one_line_and_writes_nothing(tmp_path):
    out = SCRIPT.parent / "results" / "speed-nm-cuda.json"
    existed = out.exists()
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "needs a CUDA GPU" in r.stderr
    assert out.exists() == existed
