"""A model's eval preprocessing as a timm data config: a builder's own pretrained_cfg (or default_cfg),
the documented fallback (torchvision's ImageNet eval), and an override checked key by key."""

import pytest
import torch
from PIL import Image

from connectome.errors import ConnectomeError
from connectome.models import IMAGENET_EVAL, check_preprocess, load_model
from connectome.models.preprocess import preset_config

NETS = '''import torch

def declared():
    m = torch.nn.Linear(4, 2)
    m.pretrained_cfg = {"input_size": (3, 160, 160), "interpolation": "bicubic", "crop_pct": 1.0,
                        "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "num_classes": 2}
    return m

def old_style():
    m = torch.nn.Linear(4, 2)
    m.default_cfg = {"input_size": (3, 128, 128), "crop_pct": 0.8}
    return m

def plain():
    return torch.nn.Linear(4, 2)
'''


@pytest.fixture
def nets(tmp_path, monkeypatch):
    (tmp_path / "prepnets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))


def _image(w=300, h=250, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())


def test_builder_declares_its_preprocessing(nets):
    m = load_model("prepnets:declared")
    assert m.data_config == {"input_size": (3, 160, 160), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5),
                             "std": (0.5, 0.5, 0.5), "crop_pct": 1.0, "crop_mode": "center"}
    x = m.transforms(_image())
    assert x.shape == (3, 160, 160) and x.min() >= -1 and x.max() <= 1
    old = load_model("prepnets:old_style")  # timm's older attribute name; keys it lacks take timm's defaults
    assert old.data_config["input_size"] == (3, 128, 128) and old.data_config["crop_pct"] == 0.8
    assert old.transforms(_image()).shape == (3, 128, 128)


def test_fallback_is_torchvisions_imagenet_eval(nets):
    from torchvision.transforms._presets import ImageClassification
    m = load_model("prepnets:plain")
    assert m.data_config == {**IMAGENET_EVAL}
    img = _image()
    ours, theirs = m.transforms(img), ImageClassification(crop_size=224, resize_size=256)(img)
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert (ours - theirs).abs().max() < 1e-5  # x/255 against x*(1/255): the last bit only


def test_override_beats_declared_and_fallback(nets):
    m = load_model("prepnets:declared", preprocess={"input_size": 96, "interpolation": "bilinear"})
    assert m.data_config["input_size"] == (3, 96, 96) and m.data_config["interpolation"] == "bilinear"
    assert m.data_config["mean"] == (0.5, 0.5, 0.5)  # kept from the builder's config
    assert m.transforms(_image()).shape == (3, 96, 96)
    # Flag form: a list of KEY=VALUE that a comma split has cut into pieces.
    p = load_model("prepnets:plain", preprocess=["mean=0.5", "0.4", "0.3", "crop_pct=1"])
    assert p.data_config["mean"] == (0.5, 0.4, 0.3) and p.data_config["crop_pct"] == 1.0


def test_override_of_a_torchvision_preset_keeps_its_sizes():
    from timm.data import create_transform
    from torchvision.models import MobileNet_V3_Large_Weights
    preset = MobileNet_V3_Large_Weights.IMAGENET1K_V2.transforms()  # resize 232, crop 224
    cfg = preset_config(preset)
    resize = create_transform(**cfg, is_training=False).transforms[0]
    assert resize.size == 232 and cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bilinear"


@pytest.mark.parametrize("values,message", [
    ({"crop": 1}, "unknown key 'crop'"),
    ({"crop_pct": 1.5}, "crop_pct: wants a share"),
    ({"crop_pct": "abc"}, "crop_pct: wants a positive number"),
    ({"interpolation": "cubic"}, "interpolation: must be one of"),
    ({"std": [0.5, 0]}, "std: wants 1 or 3 positive numbers"),
    ({"input_size": [3, 224, float("nan")]}, "input_size: wants"),
    (["224"], "is not KEY=VALUE"),
])
def test_bad_override_is_one_line_naming_the_key(values, message):
    with pytest.raises(ConnectomeError, match=message) as e:
        check_preprocess(values)
    assert "\n" not in str(e.value)


def test_override_forms():
    assert check_preprocess("input_size=3x192x192 crop_mode=squash") == {"input_size": (3, 192, 192), "crop_mode": "squash"}
    assert check_preprocess({"mean": 0, "std": 1, "input_size": [200, 180]}) == \
        {"mean": (0.0,), "std": (1.0,), "input_size": (3, 200, 180)}
    assert check_preprocess(None) == {} and check_preprocess([]) == {}
