"""Data the network does not take is one line from `connectome lottery` and `connectome train`, as from
prune and eval (connectome.data.fit): which layer takes what, and what the data gives, before any
training starts."""

from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner

from connectome.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def cifar_binary(folder: Path, n: int = 4) -> Path:
    """CIFAR-10's six binary batches, n random 3x32x32 records each."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(folder / name)
    return folder


def one_line(r, *words: str) -> bool:
    """Exit 2, one line that holds every word, and no exception but the exit (no traceback)."""
    lines = r.output.strip().splitlines()
    return r.exit_code == 2 and isinstance(r.exception, SystemExit) and len(lines) == 1 and all(w in lines[0] for w in words)


def test_cifar_into_lenet_through_lottery_names_the_layer(tmp_path):
    data = f"cifar10:{cifar_binary(tmp_path / 'c10')}"
    r = CliRunner().invoke(main, ["lottery", str(RECIPES / "lottery-lenet300-mnist.yaml"), "--data", data,
                                  "--levels", "1", "--iterations", "2", "--val-samples", "4", "--device", "cpu",
                                  "--out", str(tmp_path / "run"), "--quiet"])
    assert one_line(r, "lenet_300_100_mnist", data, "3x32x32", "784 values"), r.output
    assert not (tmp_path / "run").exists()  # refused before the run folder is claimed


def test_cifar_into_lenet_through_train_names_the_layer(tmp_path):
    data = f"cifar10:{cifar_binary(tmp_path / 'c10')}"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"kind": "train", "model": "lenet_300_100", "data": data, "epochs": 1,
                                      "val_samples": 4, "batch_size": 4}))
    r = CliRunner().invoke(main, ["train", str(recipe), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert one_line(r, "lenet_300_100", data, "3x32x32", "784 values"), r.output
    assert not (tmp_path / "out").exists()
