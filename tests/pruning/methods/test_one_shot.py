"""The one-shot method through `prune`, and the spellings of methods and scores, on the shipped LeNet-300-100."""

import json

import pytest
import torch
from click.testing import CliRunner

from connectome.cli import main
from connectome.models.load import load_model
from connectome.pruning.mask import Mask
from connectome.pruning.methods.one_shot import OneShot
from connectome.pruning.settings import CompareSettings, PruneSettings
from connectome.pruning.setup import Runtime, prepare

FAST = ["--calib-samples", "1000", "--eval-samples", "500", "--batch-size", "100", "--quiet"]
SMALL = {"model": "lenet_300_100", "remove": "60%", "calib_samples": 1000, "eval_samples": 500, "batch_size": 100}


def run_cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def magnitude_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("one-shot")
    r = run_cli("prune", "lenet_300_100", "--method", "one-shot", "--score", "magnitude", "--remove", "60%",
                "--learn-points", "4", "--out", str(out), *FAST)
    assert r.exit_code == 0, r.output
    return out


def test_one_shot_magnitude_zeroes_the_smallest_weights_and_verifies(magnitude_run):
    base = load_model("lenet_300_100").module.state_dict()
    mask = Mask.load(magnitude_run / "mask.safetensors")
    zeroed, kept = [], []
    for name, keep in mask.items():
        w = base[name].abs()
        zeroed.append(w[~keep])
        kept.append(w[keep])
    zeroed, kept = torch.cat(zeroed), torch.cat(kept)
    prunable = zeroed.numel() + kept.numel()
    assert zeroed.numel() == round(0.6 * prunable)
    assert float(zeroed.max()) <= float(kept.min())  # global magnitude: no kept weight is smaller
    r = run_cli("verify", str(magnitude_run))
    assert r.exit_code == 0 and "OK" in r.output, r.output


def test_one_shot_records_a_curve_of_its_counts(magnitude_run):
    manifest = json.loads((magnitude_run / "manifest.json").read_text())
    assert manifest["settings"]["method"] == "one-shot" and manifest["settings"]["score"] == "magnitude"
    rows = (magnitude_run / "curve.csv").read_text().splitlines()[1:]
    removed = [int(r.split(",")[2]) for r in rows]
    target = manifest["result"]["target"]
    assert removed == [0, round(target / 4), round(target / 2), round(3 * target / 4), target]


def test_a_resumed_one_shot_run_ends_at_the_same_mask(tmp_path, magnitude_run):
    s = PruneSettings.from_mapping({**SMALL, "method": "one-shot", "score": "magnitude", "learn_points": 4})
    quiet = Runtime(progress=False)
    first = OneShot(prepare(s), tmp_path, runtime=quiet)
    first.run(target=first.counts[1])  # stopped after two counts
    assert first.flat.removed() == first.counts[1]
    again = OneShot(prepare(s), tmp_path, resume=True, runtime=quiet)
    again.run()
    assert [r["removed"] for r in again.log] == [0, *again.counts]
    assert again.flat.to_mask() == Mask.load(magnitude_run / "mask.safetensors")


def test_the_old_criterion_spelling_names_what_it_now_runs(tmp_path):
    old = PruneSettings.from_mapping({**SMALL, "criterion": "magnitude"})
    new = PruneSettings.from_mapping({**SMALL, "method": "greedy", "score": "magnitude"})
    assert (old.method, old.score) == ("greedy", "magnitude") and old.digest() == new.digest()
    assert old.notes == ["--criterion magnitude now reads --method greedy --score magnitude"]
    r = CliRunner().invoke(main, ["prune", "no_such_model", "--remove", "5%", "--criterion", "learned",
                                  "--out", str(tmp_path / "x")])
    assert "note: --criterion learned now reads --method learned" in r.output
    r = run_cli("prune", "lenet_300_100", "--remove", "5%", "--criterion", "magnitude", "--method", "one-shot",
                "--out", str(tmp_path / "y"))
    assert r.exit_code == 2 and "old spelling" in r.output and not (tmp_path / "y").exists()


def test_compare_takes_the_same_names():
    cs = CompareSettings.from_mapping({**SMALL, "methods": "magnitude,one-shot:wanda,greedy:wanda,learned"})
    assert cs.methods == ["magnitude", "one-shot:wanda", "greedy:wanda", "learned"]
    # one run under two names runs once, under the first (issue 32 row 20)
    assert CompareSettings.from_mapping({**SMALL, "methods": "magnitude,one-shot:magnitude"}).methods == ["magnitude"]
    with pytest.raises(Exception, match="methods"):
        CompareSettings.from_mapping({**SMALL, "methods": "one-shot:nonsense"})


def test_restore_cycles_continue_a_one_shot_run_as_the_greedy_loop(tmp_path):
    out = tmp_path / "run"
    args = ["prune", "lenet_300_100", "--method", "one-shot", "--score", "magnitude", "--remove", "20%",
            "--learn-points", "2", "--restore-cycles", "2", "--out", str(out), *FAST]
    assert run_cli(*args).exit_code == 0
    phases = [json.loads(line)["phase"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert phases[:3] == ["dense", "one-shot", "one-shot"] and phases.count("swap") >= 2
    assert run_cli("verify", str(out)).exit_code == 0
    again = run_cli(*args, "--resume")  # the folder's state is now the loop's: the resume takes it as one
    assert again.exit_code == 0, again.output
    assert Mask.load(out / "mask.safetensors").removed() == round(0.2 * 266_200)
