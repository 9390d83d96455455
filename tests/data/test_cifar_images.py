"""cifar10:PATH as an image folder (png or jpg) or a .tar.gz of one, decoded once into the cache."""

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from connectome.data import cifar_cache, cifar_files, load_dataset, paths
from connectome.data.cifar_files import CLASSES
from connectome.errors import ConnectomeError

SHARED_TARBALL = Path(__file__).resolve().parents[2].parent / "shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    return tmp_path / "cache"


def write_images(root: Path, suffix: str = ".png", per_class: dict[str, int] | None = None, seed: int = 0) -> dict:
    """Two train and one test image per class, random pixels; the arrays each split should decode to."""
    rng = np.random.default_rng(seed)
    expected = {}
    for split, n in (("train", 2), ("test", 1)):
        arrays, labels = [], []
        for label, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range((per_class or {}).get(name, n)):
                a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(a).save(d / f"{i:04d}{suffix}", quality=95)
                arrays.append(np.asarray(Image.open(d / f"{i:04d}{suffix}").convert("RGB")))  # what PIL decodes
                labels.append(label)
        expected[split] = (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), torch.tensor(labels))
    return expected


def tar(folder: Path, out: Path, prefix: str = "") -> Path:
    with tarfile.open(out, "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(folder / split, arcname=f"{prefix}{split}")
    return out


def check(splits, expected):
    assert splits.name == "cifar10" and splits.num_classes == 10
    for got, split in ((splits.train, "train"), (splits.test, "test")):
        images, labels = expected[split]
        assert got.images.dtype == torch.uint8 and got.images.shape == images.shape
        assert torch.equal(got.images, images) and torch.equal(got.labels, labels)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_an_image_folder_decodes_to_the_pixels_in_class_order(tmp_path, suffix):
    expected = write_images(tmp_path / "c10", suffix)
    check(load_dataset(f"cifar10:{tmp_path / 'c10'}"), expected)


@pytest.mark.parametrize("prefix", ["", "cifar10/"])
def test_a_tarball_is_read_without_extracting(tmp_path, prefix):
    expected = write_images(tmp_path / "c10", ".jpg")
    archive = tar(tmp_path / "c10", tmp_path / "c10.tar.gz", prefix)
    check(load_dataset(f"cifar10:{archive}"), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c10", "c10.tar.gz", "cache"]  # nothing extracted


def test_the_second_run_reads_the_cache_and_a_changed_copy_does_not(tmp_path, monkeypatch):
    expected = write_images(tmp_path / "c10")
    load_dataset(f"cifar10:{tmp_path / 'c10'}")
    real = cifar_files.decode_split

    def refuse(*a):
        raise AssertionError("decoded again")
    monkeypatch.setattr(cifar_cache, "decode_split", refuse)
    check(load_dataset(f"cifar10:{tmp_path / 'c10'}"), expected)  # from the cache
    new = np.zeros((32, 32, 3), np.uint8)
    Image.fromarray(new).save(tmp_path / "c10/test/truck/0000.png")  # another file: another key
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(f"cifar10:{tmp_path / 'c10'}")
    monkeypatch.setattr(cifar_cache, "decode_split", real)
    assert load_dataset(f"cifar10:{tmp_path / 'c10'}").test.images[-1].sum() == 0
    assert len(list((tmp_path / "cache/cifar10-images").glob("*.safetensors"))) == 2


def test_a_pool_of_processes_decodes_the_same_tensors(tmp_path):
    expected = write_images(tmp_path / "c10", ".jpg")
    listing = cifar_files.folder_listing(tmp_path / "c10")
    for split in ("train", "test"):
        one = cifar_files.decode_split(listing[split], split, workers=1)
        two = cifar_files.decode_split(listing[split], split, workers=2)
        assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1]) and torch.equal(one[0], expected[split][0])
    assert 1 <= cifar_files.idle_workers() <= 8


def test_a_missing_or_extra_class_is_refused_in_one_line(tmp_path):
    write_images(tmp_path / "c10")
    (tmp_path / "c10/train/cat").rename(tmp_path / "c10/train/kitten")
    with pytest.raises(ConnectomeError) as e:
        load_dataset(f"cifar10:{tmp_path / 'c10'}")
    msg = str(e.value)
    assert "\n" not in msg and "missing cat" in msg and "not CIFAR-10 classes: kitten" in msg
    archive = tar(tmp_path / "c10", tmp_path / "bad.tar.gz")
    with pytest.raises(ConnectomeError, match="missing cat; not CIFAR-10 classes: kitten"):
        load_dataset(f"cifar10:{archive}")


def test_empty_class_wrong_size_and_missing_split_are_refused(tmp_path):
    write_images(tmp_path / "a", per_class={"dog": 0})
    with pytest.raises(ConnectomeError, match="dog holds no .png or .jpg images"):
        load_dataset(f"cifar10:{tmp_path / 'a'}")
    write_images(tmp_path / "b")
    Image.new("RGB", (28, 28)).save(tmp_path / "b/train/ship/0001.png")
    with pytest.raises(ConnectomeError, match="0001.png is 28x28: CIFAR-10 images are 32x32"):
        load_dataset(f"cifar10:{tmp_path / 'b'}")
    write_images(tmp_path / "c")
    (tmp_path / "c/test").rename(tmp_path / "c/val")
    with pytest.raises(ConnectomeError, match="test does not exist"):
        load_dataset(f"cifar10:{tmp_path / 'c'}")
    (tmp_path / "d.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(ConnectomeError, match="not a readable .tar.gz"):
        load_dataset(f"cifar10:{tmp_path / 'd.tar.gz'}")


def test_grey_images_become_rgb_and_non_images_are_skipped(tmp_path):
    expected = write_images(tmp_path / "c10")
    Image.new("L", (32, 32), 7).save(tmp_path / "c10/test/airplane/0000.png")
    (tmp_path / "c10/test/airplane/notes.txt").write_text("not an image")
    (tmp_path / "c10/test/airplane/._0000.png").write_bytes(b"AppleDouble")
    s = load_dataset(f"cifar10:{tmp_path / 'c10'}")
    assert len(s.test) == len(expected["test"][1]) and s.test.images[0].eq(7).all()


def test_the_binary_release_still_reads(tmp_path):
    folder = tmp_path / "bin" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}.bin", 3) for i in range(1, 6)] + [("test_batch.bin", 2)]:
        (folder / name).write_bytes(np.concatenate([np.r_[rng.integers(0, 10, 1), rng.integers(0, 256, 3072)]
                                                    for _ in range(n)]).astype(np.uint8).tobytes())
    s = load_dataset(f"cifar10:{tmp_path / 'bin'}")
    assert len(s.train) == 15 and len(s.test) == 2 and s.train.images.shape[1:] == (3, 32, 32)
    assert not (tmp_path / "cache").exists()  # the binary release needs no decoding cache


@pytest.mark.skipif(not SHARED_TARBALL.is_file(), reason="no shared CIFAR-10 JPEG tarball")
def test_the_shared_jpeg_tarball_listing():
    listing = cifar_files.archive_listing(SHARED_TARBALL)
    assert [len(listing[s]) for s in ("train", "test")] == [50000, 10000]
    assert np.bincount([label for label, _, _ in listing["test"]]).tolist() == [1000] * 10
