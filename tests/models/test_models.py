
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from connectome.cli import main
from connectome.errors import ConnectomeError
from connectome.models import load_model, read_state_file, state_sha256


def test_reference_model_loads_shipped_weights():
    m = load_model("lenet_300_100")
    assert m.dataset == "fashion-mnist" and m.weights == "reference:lenet_300_100" and not m.module.training


def test_torchvision_with_weights_file(tmp_path):
    from torchvision.models import mobilenet_v3_small
    ref = mobilenet_v3_small()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        m = load_model("mobilenet_v3_small", weights_file=str(tmp_path / f))
        assert state_sha256(m.module.state_dict()) == state_sha256(ref.state_dict())
        assert m.transforms is not None


def test_pth_with_objects_is_never_unpickled(tmp_path):
    import os
    torch.save({"w": torch.zeros(1), "evil": os.system}, tmp_path / "x.pth")  # a pickled global
    with pytest.raises(ConnectomeError, match="tensors-only"):
        read_state_file(tmp_path / "x.pth")


def test_timm_with_weights_file(tmp_path):
    import timm
    ref = timm.create_model("resnet10t", pretrained=False)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    m = load_model("timm:resnet10t", weights_file=str(tmp_path / "w.safetensors"))
    assert state_sha256(m.module.state_dict()) == state_sha256(ref.state_dict())


def test_user_builder(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text("import torch\ndef tiny():\n    return torch.nn.Linear(4, 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    save_file({"weight": torch.ones(2, 4), "bias": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    m = load_model("mynets:tiny", weights_file=str(tmp_path / "w.safetensors"))
    assert torch.equal(m.module.weight, torch.ones(2, 4))
    with pytest.raises(ConnectomeError, match="cannot import"):
        load_model("mynets:missing")


def test_wrong_weights_file_names_the_keys(tmp_path):
    save_file({"foo": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ConnectomeError, match="does not fit"):
        load_model("lenet_300_100", weights_file=str(tmp_path / "w.safetensors"))


@pytest.mark.parametrize("args,message", [
    (["eval", "no_such_model"], "unknown model"),
    (["eval", "mobilenet_v3_large", "--weights", "IMAGENET9K", "--data", "fashion-mnist"], "has no weights"),
    (["eval", "lenet_300_100", "--data", "folder:/no/such/dir"], "does not exist"),
    (["eval", "mobilenet_v3_large", "--data", "fashion-mnist"], "download.pytorch.org"),
    (["eval", "lenet_300_100", "--preprocess", "crop=1"], "preprocess: unknown key 'crop'"),
    (["eval", "lenet_300_100", "--preprocess", "crop_pct=2"], "preprocess crop_pct: wants a share in (0, 1]"),
])
def test_bad_input_is_one_line_exit_2(args, message):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and message in r.output
    assert "Traceback" not in r.output
    assert len([line for line in r.output.splitlines() if line.startswith("error:")]) == 1


def test_download_error_offers_weights_file():
    r = CliRunner().invoke(main, ["eval", "mobilenet_v3_large", "--data", "fashion-mnist"])
    assert "--weights-file" in r.output


def test_eval_reference_model():
    r = CliRunner().invoke(main, ["eval", "lenet_300_100", "--eval-samples", "1000", "--json"])
    assert r.exit_code == 0, r.output
    import json
    m = json.loads(r.output.strip().splitlines()[-1])
    assert m["samples"] == 1000 and m["top1"] > 80


def test_models_lists_every_kind():
    r = CliRunner().invoke(main, ["models"])
    assert r.exit_code == 0
    for name in ("lenet_300_100", "mobilenet_v3_small_fmnist", "mobilenet_v3_large", "efficientnet_lite0", "timm:"):
        assert name in r.output
