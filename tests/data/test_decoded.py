"""Decoded calibration subsets: uint8 tensor files that give the floats of the undivided transform."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from connectome.data import decoded as dec
from connectome.cli import main
from connectome.data import batches, subset
from connectome.pruning.mask import Mask


def write_folder(root, per_class=12, val_per_class=4, seed=0):
    """Real JPEG and PNG files of varied sizes, two classes, train/ and val/."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c, tint in (("ant", 0), ("bee", 120)):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                h, w = 30 + 3 * i, 40 + 2 * i
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                pixels[..., 0] = np.clip(pixels[..., 0].astype(int) // 2 + tint, 0, 255)
                ext = "jpg" if i % 2 else "png"
                Image.fromarray(pixels).save(root / split / c / f"{i}.{ext}")
    return root


def transforms():
    """A torchvision preset, a v2 pipeline, a v1 pipeline and timm's: each small."""
    from timm.data import create_transform
    from torchvision.transforms import transforms as v1
    from torchvision.transforms import v2
    from torchvision.transforms._presets import ImageClassification
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)
    return {
        "preset": ImageClassification(crop_size=16, resize_size=20),
        "v2": v2.Compose([v2.Resize(20, antialias=True), v2.CenterCrop(16), v2.PILToTensor(),
                          v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]),
        "v1": v1.Compose([v1.Resize((18, 18)), v1.CenterCrop(16), v1.ToTensor()]),
        "timm": create_transform(input_size=(3, 16, 16), crop_pct=0.8, interpolation="bicubic", mean=mean, std=std),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("kind", ["preset", "v2", "v1", "timm"])
def test_decoded_floats_equal_the_full_transform(folder, tmp_path, kind):
    from torchvision.datasets import ImageFolder
    tf = transforms()[kind]
    sub = subset(ImageFolder(str(folder / "train"), transform=tf), 10, seed=0)
    parts = dec.split_transform(tf)
    assert parts is not None
    tensors = dec.decoded(sub, *parts, tmp_path / "cache", "folder:x", workers=0)
    assert tensors.images.dtype == torch.uint8 and tensors.images.shape == (10, 3, 16, 16)
    (xa, ya), = list(batches(sub, 10))
    (xb, yb), = list(batches(tensors, 10))
    assert torch.equal(ya, yb)
    # The same operations in the same order: equal bit for bit, not only to float tolerance.
    assert torch.equal(xa, xb), (xa - xb).abs().max()


def test_transforms_that_cannot_be_split():
    from torchvision.transforms import v2
    assert dec.split_transform(None) is None
    assert dec.split_transform(v2.Compose([v2.Resize(20), v2.CenterCrop(16)])) is None  # never a tensor
    assert dec.split_transform(v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
                                           v2.Normalize([0.5], [0.5]), v2.Lambda(lambda x: x * 2)])) is None
    assert dec.split_transform(v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=False)])) is None


def test_a_file_is_decoded_once_and_keyed_by_subset_and_transform(folder, tmp_path, monkeypatch):
    from torchvision.datasets import ImageFolder
    tf = transforms()["preset"]
    base = ImageFolder(str(folder / "train"), transform=tf)
    parts = dec.split_transform(tf)
    cache = tmp_path / "cache"
    first = dec.decoded(subset(base, 8, seed=0), *parts, cache, "folder:x", workers=0)
    files = sorted(cache.glob("decoded-*.safetensors"))
    assert len(files) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again")
    monkeypatch.setattr(dec, "_decode", no_decoding)
    again = dec.decoded(subset(base, 8, seed=0), *parts, cache, "folder:x", workers=0)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    # Other samples, another transform or another data spec: another file, never the stale one.
    monkeypatch.undo()
    dec.decoded(subset(base, 8, seed=1), *parts, cache, "folder:x", workers=0)
    dec.decoded(subset(base, 8, seed=0), *dec.split_transform(transforms()["v2"]), cache, "folder:x", workers=0)
    dec.decoded(subset(base, 8, seed=0), *parts, cache, "folder:y", workers=0)
    assert len(list(cache.glob("decoded-*.safetensors"))) == 4


def test_images_of_different_sizes_are_refused(folder, tmp_path):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import transforms as v1
    from connectome.errors import ConnectomeError
    tf = v1.Compose([v1.ToTensor()])  # splittable, but nothing crops the varied sizes to one
    with pytest.raises(ConnectomeError, match="differ in size"):
        dec.decoded(subset(ImageFolder(str(folder / "train"), transform=tf), 8, seed=0), *dec.split_transform(tf),
                    tmp_path / "cache", "folder:x", workers=0)
    assert not list((tmp_path / "cache").glob("decoded-*"))


TINY_NET = '''
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 2))
'''


def test_prune_with_cache_calib_makes_the_same_run(folder, tmp_path, monkeypatch):
    """A user model on an image folder (its transform: torchvision's v2 ImageNet eval pipeline): the run
    with --cache-calib takes the same steps, with the same measured losses, as the run without.
    The decision and acceptance subsets and the evaluation split (val/) are each decoded once."""
    (tmp_path / "tinynet_decoded.py").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["prune", "tinynet_decoded:build", "--data", f"folder:{folder}", "--remove", "25%", "--calib-samples", "24",
            "--accept-fraction", "0.25", "--batch-size", "6", "--workers", "0", "--quiet"]
    runner = CliRunner()
    plain = runner.invoke(main, [*args, "--out", str(tmp_path / "plain")], catch_exceptions=False)
    assert plain.exit_code == 0, plain.output
    cache = tmp_path / "cache"
    cached = runner.invoke(main, [*args, "--out", str(tmp_path / "cached"), "--cache-calib", str(cache)],
                           catch_exceptions=False)
    assert cached.exit_code == 0, cached.output
    assert len(list(cache.glob("decoded-*.safetensors"))) == 3  # decision, acceptance and evaluation
    assert Mask.load(tmp_path / "cached" / "mask.safetensors") == Mask.load(tmp_path / "plain" / "mask.safetensors")
    log = [json.loads(line) for line in (tmp_path / "plain" / "log.jsonl").read_text().splitlines()]
    log_cached = [json.loads(line) for line in (tmp_path / "cached" / "log.jsonl").read_text().splitlines()]
    assert len(log) == len(log_cached) > 2
    # Bit-equal inputs: every decision and every measured number is the same, not only the mask.
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in log] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in log_cached]
    assert any(r.get("eval_loss") for r in log[1:]) and sum(r["accepted"] for r in log) > 2
