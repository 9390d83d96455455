"""Issue 32 rows 2, 7, 8 and 10, through the real command: a link in a run folder is never written
through, and nothing false verifies (edited settings, metrics that are not numbers or cannot be measured
again, swapped base weights, float64 base weights compared after rounding to float32).

Each test names the row of the issue it covers."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import FAST, cli, one_line
from safetensors.torch import load_file

from connectome.io import mark_folder, read_metadata, save_state
from connectome.models.load import load_model


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> Path:
    """LeNet-300-100's reference weights as a local base file (what a run pruned from a file verifies against)."""
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_state(path, load_model("lenet_300_100").module.state_dict())
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, base_file) -> Path:
    """A finished magnitude run of LeNet-300-100 pruned from `base_file` (a few seconds)."""
    out = tmp_path_factory.mktemp("run") / "run"
    r = cli("prune", "lenet_300_100", "--weights-file", base_file, "--remove", "2%", "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def copy(run_dir, tmp_path) -> Path:
    """A copy of the run (which names its base file)."""
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


def edit_manifest(run: Path, change) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))


def publish(run: Path, tmp_path: Path):
    registry = tmp_path / "site" / "registry.json"
    return cli("weights", "publish", run, "--name", "lenet_300_100.probe", "--registry", registry), registry


def planted_link(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A marked run folder whose file `name` is a link to a file of the user's, which holds "keep"."""
    out = tmp_path / "out"
    mark_folder(out)
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    (out / name).symlink_to(target)
    return out, target


# --- row 2: a link in a run folder is never followed -------------------------------------------------

@pytest.mark.parametrize("dangling", [False, True])
def test_row2_a_lock_that_is_a_link_is_refused_and_its_target_untouched(copy, tmp_path, base_file, dangling):
    target = tmp_path / "precious.txt"
    if not dangling:
        target.write_text("a file of the user's, which a resume must not truncate")
    (copy / ".lock").unlink()
    (copy / ".lock").symlink_to(target)
    r = cli("prune", "lenet_300_100", "--weights-file", base_file, "--remove", "2%", "--out", copy, "--resume", *FAST)
    assert one_line(r) and f"{copy / '.lock'} is a symbolic link" in r.output, r.output
    if dangling:
        assert not target.exists() and (copy / ".lock").is_symlink()  # not created through the link either
    else:
        assert target.read_text() == "a file of the user's, which a resume must not truncate"


def test_row2_a_lock_that_is_a_link_is_refused_for_any_run(tmp_path, base_file):
    """A new run into a marked folder, and the helper itself (the lock every writer of a folder takes)."""
    from connectome.errors import ConnectomeError
    from connectome.io import folder_lock

    out, target = planted_link(tmp_path, ".lock")
    r = cli("prune", "lenet_300_100", "--remove", "2%", "--out", out, *FAST)
    assert one_line(r) and "is a symbolic link" in r.output and target.read_text() == "keep", r.output
    (out / ".lock").unlink()
    os.mkfifo(out / ".lock")  # neither a link nor a file: opening it to write would block
    with pytest.raises(ConnectomeError, match="is not a regular file"):
        with folder_lock(out):
            pass


# --- row 7: nothing false verifies -------------------------------------------------------------------

def test_row7_edited_settings_fail_verify_and_publish(copy, tmp_path):
    def change(m):  # another evaluation subset than the run's, with the run's digest kept
        m["settings"]["eval_samples"], m["settings"]["seed"] = 20, 1
    edit_manifest(copy, change)
    r = cli("verify", copy)
    assert r.exit_code == 1 and "FAIL: " in r.output and "settings_digest" in r.output, r.output
    r, registry = publish(copy, tmp_path)
    assert one_line(r) and "settings_digest" in r.output and not registry.parent.exists(), r.output


def test_row7_settings_that_are_not_settings_fail_verify(copy):
    edit_manifest(copy, lambda m: m["settings"].update(eval_samples="many"))
    r = cli("verify", copy)
    assert r.exit_code == 1 and "FAIL: " in r.output and "eval_samples" in r.output, r.output
    edit_manifest(copy, lambda m: m.pop("settings"))
    r = cli("verify", copy)
    assert r.exit_code == 1 and "FAIL: " in r.output and "settings" in r.output, r.output


@pytest.mark.parametrize("key", ["top1", "top5", "loss"])
def test_row7_metrics_that_are_not_finite_fail_verify_measure_and_publish(copy, tmp_path, key):
    def change(m):
        m["result"]["final"][key] = float("nan")
    edit_manifest(copy, change)
    curve = (copy / "curve.csv").read_text().splitlines()
    header = curve[0].split(",")
    last = max(i for i, line in enumerate(curve) if i and line.split(",")[header.index("eval_top1")])
    row = curve[last].split(",")
    row[header.index(f"eval_{key}")] = "nan"
    curve[last] = ",".join(row)
    (copy / "curve.csv").write_text("\n".join(curve) + "\n")
    r = cli("verify", copy, "--measure")
    assert r.exit_code == 1 and f"final {key} nan" in r.output and "OK" not in r.output, r.output
    r, registry = publish(copy, tmp_path)
    assert one_line(r) and "nothing published" in r.output and not registry.parent.exists(), r.output


def test_row7_metrics_that_cannot_be_measured_again_are_not_published(copy, tmp_path):
    edit_manifest(copy, lambda m: m["data"].update(spec=f"mnist:{tmp_path / 'nowhere'}"))
    r = cli("verify", copy, "--measure")
    assert r.exit_code == 1 and "FAIL: " in r.output and "cannot be measured again" in r.output, r.output
    r, registry = publish(copy, tmp_path)
    assert one_line(r) and "cannot be measured again" in r.output and not registry.parent.exists(), r.output


# --- row 8: a base file that is not the run's --------------------------------------------------------

def test_row8_a_swapped_base_fails_verify_and_publish(copy, tmp_path, base_file):
    """Base and model both scaled by 1.5: the model is still the mask applied to "the base", but the base
    is not the one the run recorded."""
    swapped = tmp_path / "swapped.safetensors"
    save_state(swapped, {k: v * 1.5 for k, v in load_file(str(base_file)).items()})
    model = copy / "model.safetensors"
    save_state(model, {k: v * 1.5 for k, v in load_file(str(model)).items()}, read_metadata(model))
    r = cli("verify", copy, "--weights-file", swapped)
    assert r.exit_code == 1 and "FAIL: the base weights are not those" in r.output and "OK" not in r.output, r.output
    # The file the run names, swapped in place: publish refuses it too.
    original = base_file.read_bytes()
    shutil.copyfile(swapped, base_file)
    try:
        r, registry = publish(copy, tmp_path)
    finally:
        base_file.write_bytes(original)
    assert one_line(r) and "the base weights are not those" in r.output and not registry.parent.exists(), r.output


# --- row 10: float64 base weights ---------------------------------------------------------------------

def test_row10_verify_compares_float64_base_weights_exactly(run_dir, base_file, tmp_path):
    f64 = {k: v.double() for k, v in load_file(str(base_file)).items()}
    exact = tmp_path / "exact64.safetensors"  # the same values in float64: nothing changed
    save_state(exact, f64)
    r = cli("verify", run_dir, "--weights-file", exact)
    assert r.exit_code == 0 and "changed 0" in r.output, r.output
    off = tmp_path / "f64.safetensors"  # 1e-12 away: float32 cannot hold these values
    save_state(off, {k: v + 1e-12 for k, v in f64.items()})
    for path in (run_dir, run_dir / "model.safetensors"):
        r = cli("verify", path, "--weights-file", off)
        assert r.exit_code == 1 and "changed 0;" not in r.output and "float64" in r.output, r.output
        changed = int(r.output.split("changed ")[1].split()[0].replace(",", ""))
        nonzero = sum(int((v != 0).sum()) for v in load_file(str(run_dir / "model.safetensors")).values())
        assert changed == nonzero  # every kept weight differs from its float64 base value
    assert torch.equal(load_file(str(off))["2.weight"], f64["2.weight"] + 1e-12)


def test_row2_a_log_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, base_file):
    """log.jsonl grows by appends: a link planted in its place must not carry them into another file."""
    out, target = planted_link(tmp_path, "log.jsonl")
    r = cli("prune", "lenet_300_100", "--remove", "2%", "--out", out, *FAST)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and "Traceback" not in r.output and len(errors) == 1, r.output
    assert "log.jsonl is a symbolic link" in errors[0] and target.read_text() == "keep"


def test_row10_prune_refuses_base_weights_its_model_cannot_hold_exactly(base_file, tmp_path):
    """A float64 base of values float32 cannot hold would be pruned as other weights than the file's."""
    f64 = {k: v.double() for k, v in load_file(str(base_file)).items()}
    exact, off = tmp_path / "exact64.safetensors", tmp_path / "off64.safetensors"
    save_state(exact, f64)
    save_state(off, {k: v + 1e-12 for k, v in f64.items()})
    r = cli("prune", "lenet_300_100", "--remove", "2%", "--weights-file", off, "--out", tmp_path / "off", *FAST)
    assert one_line(r) and "float64" in r.output and "convert" in r.output and not (tmp_path / "off").exists(), r.output
    r = cli("prune", "lenet_300_100", "--remove", "2%", "--weights-file", exact, "--out", tmp_path / "exact", *FAST)
    assert r.exit_code == 0, r.output
    assert cli("verify", tmp_path / "exact").exit_code == 0
