"""`verify` checks a whole run folder: model, mask and manifest against each other and the base."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from connectome.cli import main
from connectome.io import read_metadata, save_state
from connectome.pruning.mask import Mask


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("v") / "run"
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "5000", "--criterion", "magnitude",
                                  "--calib-samples", "400", "--eval-samples", "200", "--batch-size", "100",
                                  "--out", str(out), "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


def verify(path):
    return CliRunner().invoke(main, ["verify", str(path)])


def tampered(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


def test_a_clean_run_passes(run_dir):
    r = verify(run_dir)
    assert r.exit_code == 0 and "model, mask and manifest agree" in r.output and "zeroed 5,000" in r.output


def test_a_changed_mask_fails(run_dir, tmp_path):
    copy = tampered(run_dir, tmp_path)
    mask = Mask.load(copy / "mask.safetensors")
    m = {n: t.clone() for n, t in mask.items()}
    m["2.weight"].view(-1)[torch.nonzero(m["2.weight"].view(-1))[0]] = False  # one more weight "removed"
    Mask(m).save(copy / "mask.safetensors")
    r = verify(copy)
    assert r.exit_code == 1 and "not the mask applied to the base" in r.output


def test_a_deleted_manifest_fails(run_dir, tmp_path):
    copy = tampered(run_dir, tmp_path)
    (copy / "manifest.json").unlink()
    r = verify(copy)
    assert r.exit_code == 1 and "manifest.json is missing" in r.output


def test_one_extra_zero_fails(run_dir, tmp_path):
    """Zeroing one more weight keeps the invariant (zero is allowed) but not the mask's word."""
    copy = tampered(run_dir, tmp_path)
    state = load_file(str(copy / "model.safetensors"))
    w = state["2.weight"].view(-1)
    w[torch.nonzero(w)[0]] = 0.0
    save_state(copy / "model.safetensors", state, read_metadata(copy / "model.safetensors"))
    r = verify(copy)
    assert r.exit_code == 1 and "not the mask applied to the base" in r.output


def test_counts_must_agree(run_dir, tmp_path):
    copy = tampered(run_dir, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["result"]["removed"] = 4999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    r = verify(copy)
    assert r.exit_code == 1 and "counts of removed weights disagree" in r.output
