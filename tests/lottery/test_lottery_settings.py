"""LotterySettings: validated by the settings core, digest unchanged from the first version (it names
existing run folders)."""

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectome.cli.lottery import lottery
from connectome.errors import ConnectomeError
from connectome.lottery.settings import LotterySettings

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "lottery-lenet300-mnist.yaml"
# Computed with the code before the settings were declared through connectome.settings.
MNIST_DIGEST = "da05ef3857cf49d4e1bf0905b746d096fb2fad7cc0e23627177aaf03984b9701"
FASHION_DIGEST = "d1703a23002e6aaf003ad8fdd78bd6ab9d48c5e767a52d5cde927f2d857f173a"  # the benchmark's


def test_the_digest_of_the_recipes_is_the_one_that_named_their_folders():
    s = LotterySettings.from_recipe(str(RECIPE))
    assert s.digest() == MNIST_DIGEST
    assert s.default_out() == Path("runs") / f"lottery-{MNIST_DIGEST[:10]}"
    assert LotterySettings.from_recipe(str(RECIPE), {"data": "fashion-mnist"}).digest() == FASHION_DIGEST
    assert sorted(s.hashed()) == ["batch_size", "conv_rate", "data", "eval_every", "fc_rate", "global_rate",
                                  "iterations", "lr", "model", "output_rate", "rewind_iter", "seed", "strategy",
                                  "test_samples", "train_samples", "val_samples"]


def test_runtime_settings_leave_the_digest_alone():
    s = LotterySettings.from_recipe(str(RECIPE))
    for change in (dict(levels=3), dict(controls=["random_prune"]), dict(control_levels=[1]),
                   dict(checkpoint_every=7), dict(device="cpu"), dict(threads=2)):
        assert replace(s, **change).digest() == s.digest(), change
    assert replace(s, fc_rate=0.3).digest() != s.digest()


@pytest.mark.parametrize("line, message", [
    ("iterations: abc", "iterations must be an integer, got 'abc'"),
    ("iteration: 5", "unknown setting 'iteration'"),
    ("lr: .nan", "lr must be a finite number"),
    ("fc_rate: 1", "fc_rate must be below 1"),
    ("controls: [random_everything]", "controls must be one of random_reinit, random_prune"),
    ("model: resnet", "model must be one of"),
    ("rewind_iter: 50000", "rewind_iter must lie in [0, iterations=50000)"),
    ("control_levels: [21]", "control levels [21] are not pruned levels of this run (1..20)"),
])
def test_a_bad_recipe_is_refused_in_one_line_that_names_the_setting(tmp_path, line, message):
    recipe = tmp_path / "bad.yaml"
    # The line replaces the recipe's own setting of that name: a recipe gives each key once.
    key = line.split(":")[0]
    kept = [k for k in RECIPE.read_text().splitlines() if not k.startswith(f"{key}:")]
    recipe.write_text("\n".join(kept + [line]) + "\n")
    with pytest.raises(ConnectomeError) as e:
        LotterySettings.from_recipe(str(recipe))
    assert message in str(e.value) and str(e.value).startswith(f"recipe {recipe}: ")
    assert "\n" not in str(e.value)
    # The command refuses it with the same line, before any data is read.
    result = CliRunner().invoke(lottery, [str(recipe), "--out", str(tmp_path / "run")])
    assert isinstance(result.exception, ConnectomeError) and str(result.exception) == str(e.value)
    assert not (tmp_path / "run").exists()


def test_flags_are_checked_and_named_as_flags(tmp_path):
    for args, message in ((["--iterations", "abc"], "--iterations must be an integer, got 'abc'"),
                          (["--control-levels", "1,x"], "--control-levels wants comma-separated integers"),
                          (["--global", "--strategy", "layerwise"], "--global and --strategy layerwise disagree")):
        result = CliRunner().invoke(lottery, [str(RECIPE), *args])
        assert isinstance(result.exception, ConnectomeError) and message in str(result.exception), result.output


def test_settings_built_in_code_are_validated_by_the_run(tmp_path):
    from connectome.lottery.experiment import Lottery

    with pytest.raises(ConnectomeError, match="batch_size must be at least 1"):
        Lottery(LotterySettings(model="lenet_300_100_mnist", batch_size=0), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_ints_for_float_settings_give_the_digest_of_the_floats():
    a = LotterySettings.from_mapping({"model": "conv2", "conv_rate": 0, "lr": 1})
    b = LotterySettings.from_mapping({"model": "conv2", "conv_rate": 0.0, "lr": 1.0})
    assert a.digest() == b.digest() and isinstance(a.lr, float)
