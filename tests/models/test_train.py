"""`connectome train`: a recipe's values checked by TrainRecipe (the settings code of every command),
and a short run that writes its weights and report."""

import json

import yaml
from click.testing import CliRunner

from connectome.cli import main
from connectome.io import read_metadata
from connectome.models.train import TrainRecipe


def _recipe(tmp_path, **values):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"kind": "train", **values}))
    return str(path)


def test_a_bad_recipe_value_is_one_line(tmp_path):
    for values, message in (({"model": "lenet_300_100", "lr": "fast"}, "lr must be a finite number"),
                            ({"model": "lenet_300_100", "epoch": 3}, "unknown setting 'epoch'"),
                            ({"model": "lenet_300_100", "mix_prob": 2}, "mix_prob must be at most 1")):
        r = CliRunner().invoke(main, ["train", _recipe(tmp_path, **values)])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_a_short_run_writes_weights_and_report(tmp_path, idx_folder):
    recipe = _recipe(tmp_path, model="lenet_300_100_mnist", data=f"mnist:{idx_folder}", epochs=3, val_samples=100,
                     batch_size=50)
    r = CliRunner().invoke(main, ["train", recipe, "--out", str(tmp_path / "out"), "--epochs", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "lenet_300_100_mnist.train.json").read_text())
    assert report["recipe"]["epochs"] == 1 and len(report["history"]) == 1 and report["test"]["samples"] == 100
    stored = json.loads(read_metadata(tmp_path / "out" / "lenet_300_100_mnist.safetensors")["recipe"])
    assert stored == TrainRecipe.from_mapping(report["recipe"]).to_dict()
