"""A data source answers every question about its kind of data, so a new kind is one class: registered
here for the test's length, it is parsed, checked, loaded and evaluated through the command line
without a line changed elsewhere."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from connectome.cli import main
from connectome.data import DATA_SOURCES, DataSource, ImageTensors, Splits, check_spec, data_source_of, load_dataset
from connectome.errors import ConnectomeError


class Toy(DataSource):
    kind = "toy"
    aliases = ("toys",)
    release = (20, 10)

    def load(self, path, transforms=None):
        images = torch.zeros(30, 1, 28, 28, dtype=torch.uint8)
        labels = torch.arange(30) % 10
        for i, c in enumerate(labels.tolist()):
            images[i, 0, 2 * c:2 * c + 4, 2 * c:2 * c + 4] = 255
        return Splits(ImageTensors(images[:20], labels[:20]), ImageTensors(images[20:], labels[20:]), 10, self.kind)


@pytest.fixture
def toy():
    DATA_SOURCES.register(Toy)
    try:
        yield DATA_SOURCES["toy"]
    finally:
        DATA_SOURCES.unregister("toy")


def test_a_new_data_kind_is_one_class(toy):
    assert data_source_of("TOYS") is toy and check_spec("toy") == (toy, None)
    splits = load_dataset("toy")
    assert splits.source is toy and (len(splits.train), len(splits.test)) == toy.release
    r = CliRunner().invoke(main, ["eval", "lenet_300_100", "--data", "toys", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["samples"] == 10
    with pytest.raises(ConnectomeError, match=r"folder:PATH, imagenet:PATH, toy\[:PATH\]"):
        load_dataset("nope")


def test_registering_a_kind_or_an_alias_twice_is_refused(toy):
    class Again(DataSource):
        kind = "toys-again"
        aliases = ("toy",)
    with pytest.raises(ValueError, match="registered twice"):
        DATA_SOURCES.register(Again)
    assert "toys-again" not in DATA_SOURCES


def test_facts_of_the_sources():
    assert list(DATA_SOURCES) == ["mnist", "fashion-mnist", "cifar10", "folder", "imagenet"]
    assert [s.kind for s in DATA_SOURCES.values() if s.photographs] == ["folder", "imagenet"]
    assert [s.kind for s in DATA_SOURCES.values() if s.needs_path] == ["folder", "imagenet"]
    assert {s.kind: s.release for s in DATA_SOURCES.values() if s.release} == {
        "mnist": (60000, 10000), "fashion-mnist": (60000, 10000), "cifar10": (50000, 10000)}
    assert [data_source_of(k).kind for k in ("FMNIST", "fashion_mnist", "cifar-10:/x", "CIFAR_10")] == [
        "fashion-mnist", "fashion-mnist", "cifar10", "cifar10"]
    with pytest.raises(ConnectomeError, match="unknown data spec 'svhn': use one of mnist\\[:PATH\\], "
                                              "fashion-mnist\\[:PATH\\], cifar10\\[:PATH\\], folder:PATH, imagenet:PATH"):
        data_source_of("svhn")
    with pytest.raises(ConnectomeError, match="imagenet:PATH needs a folder"):
        check_spec("imagenet")


def test_sizes_are_counted_without_a_load_and_agree_with_it(tmp_path, idx_folder):
    cifar = tmp_path / "c10"
    cifar.mkdir()
    for name, n in [(f"data_batch_{i}.bin", 3) for i in range(1, 6)] + [("test_batch.bin", 2)]:
        np.zeros((n, 3073), dtype=np.uint8).tofile(cifar / name)
    folder = tmp_path / "f"
    for split, n in (("train", 3), ("val", 2)):
        for c in ("cat", "dog"):
            (folder / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (4, 4)).save(folder / split / c / f"{i}.png")
    for spec, sizes in ((f"mnist:{idx_folder}", (300, 100)), (f"cifar10:{cifar}", (15, 2)), (f"folder:{folder}", (6, 4))):
        source, path = check_spec(spec)
        splits = load_dataset(spec)
        assert source.sizes(path) == sizes == (len(splits.train), len(splits.test)), spec
    assert data_source_of("mnist").sizes(str(tmp_path)) is None  # no IDX files: the load says what is missing
    assert data_source_of("folder").sizes(str(tmp_path)) is None
