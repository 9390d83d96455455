"""A bad --weights-file (empty, truncated, not safetensors, wrong shapes) is one line, exit 2, nothing written."""

import pytest
import torch
from click.testing import CliRunner

from connectome.cli import main
from connectome.io import save_state
from connectome.models.load import load_model


def write_case(kind, path):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        save_state(path, load_model("lenet_300_100").module.state_dict())
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "text":
        path.write_text("not a tensor file\n")
    else:
        state = load_model("lenet_300_100").module.state_dict()
        state["2.weight"] = torch.zeros(3, 3)
        save_state(path, state)


@pytest.mark.parametrize("kind,message", [("empty", "not a readable safetensors file"),
                                          ("truncated", "not a readable safetensors file"),
                                          ("text", "not a readable safetensors file"),
                                          ("shapes", "has shape (3, 3), the model's is (300, 784)")])
def test_bad_weights_file(tmp_path, kind, message):
    f = tmp_path / "w.safetensors"
    write_case(kind, f)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "10%", "--weights-file", str(f),
                                  "--out", str(out), "--quiet"])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_eval_refuses_zero_samples():
    r = CliRunner().invoke(main, ["eval", "lenet_300_100", "--eval-samples", "0"])
    assert r.exit_code == 2 and "--eval-samples" in r.output
