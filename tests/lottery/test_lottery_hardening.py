"""Issue 32 row 13, through the real command: `lottery` bounds its levels and learning rate, and a
training whose loss stops being finite ends with one line instead of writing NaN models."""

import pytest
from cli_helpers import cli, one_line
from safetensors.torch import load_file, save_file

from connectome.lottery.experiment import Lottery
from connectome.lottery.settings import LotterySettings

RECIPE = "lottery-lenet300-mnist"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("flag,value,message", [
    ("--levels", "1000000000", "--levels must be at most 100, got 1000000000"),
    ("--lr", "1e300", "--lr must be at most 1, got 1e+300"),
])
def test_row13_levels_and_lr_are_bounded(tmp_path, flag, value, message):
    out = tmp_path / "run"
    r = cli("lottery", RECIPE, flag, value, "--out", str(out))
    assert one_line(r), r.output
    assert message in r.output
    assert not out.exists()


def test_row13_a_recipe_is_held_to_the_same_bounds(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: lottery\nmodel: lenet_300_100_mnist\nlevels: 1000000000\n")
    r = cli("lottery", str(recipe), "--out", str(tmp_path / "run"))
    assert one_line(r) and "levels must be at most 100" in r.output, r.output


def test_row13_a_diverging_training_stops_with_one_line(idx_folder, tmp_path):
    """Weights that overflow float32 (here from the start, as an lr of 1e300 made them after one step)
    give a non-finite loss: the run stops there, and writes no model."""
    out = tmp_path / "run"
    flags = ["--data", f"mnist:{idx_folder}", "--iterations", "20", "--eval-every", "5", "--val-samples", "50",
             "--device", "cpu", "--quiet", "--out", str(out)]
    s = LotterySettings(model="lenet_300_100_mnist", data=f"mnist:{idx_folder}", iterations=20, eval_every=5,
                        val_samples=50, device="cpu")
    Lottery(s, out, progress=False)  # claims the folder and writes its initialisation
    init = load_file(str(out / "init.safetensors"))
    save_file({k: v * 1e38 for k, v in init.items()}, str(out / "init.safetensors"))
    r = cli("lottery", RECIPE, *flags)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit) and "Traceback" not in r.output, r.output
    assert lines[-1].startswith("error: training of level 0 (ticket) diverged: validation loss nan at iteration 5")
    assert "lower --lr" in lines[-1]
    assert not list(out.rglob("model.safetensors"))
