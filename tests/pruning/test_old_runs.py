"""Run folders written before each method owned its settings resume to the mask they would have
reached uninterrupted (tests/pruning/fixtures/old-runs: their digests are of the old rule)."""

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectome.cli import main
from connectome.pruning.mask import Mask

FIXTURES = Path(__file__).parent / "fixtures" / "old-runs"
COMMON = ["lenet_300_100", "--remove", "30%", "--include", "6.weight", "--calib-samples", "200",
          "--eval-samples", "100", "--batch-size", "50", "--quiet"]
RUNS = {"greedy": ["--method", "greedy", "--step", "0.05", "--max-step", "0.2", "--min-step", "0.01"],
        "learned": ["--method", "learned", "--learn-points", "3", "--learn-epochs", "2"],
        "one-shot": ["--method", "one-shot", "--score", "magnitude", "--learn-points", "3"]}


@pytest.mark.parametrize("name", RUNS)
def test_an_old_run_folder_resumes_to_the_uninterrupted_mask(tmp_path, name):
    out = tmp_path / name
    shutil.copytree(FIXTURES / name, out)
    r = CliRunner().invoke(main, ["prune", *COMMON, *RUNS[name], "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    expected = Mask.load(FIXTURES / f"{name}.mask.safetensors")
    assert Mask.load(out / "mask.safetensors") == expected and expected.removed() == 300
