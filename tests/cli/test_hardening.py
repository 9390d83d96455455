"""Issue 25, through the real command: every failure is one line with nothing written, base weights are
floating point and finite, a user's folder is never written over, published metrics are measured.

Each test names the row of the issue it covers."""

import csv
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from connectome.cli import main
from connectome import io as cio
from connectome.io import save_state
from connectome.models.load import load_model

FAST = ["--calib-samples", "400", "--eval-samples", "200", "--batch-size", "100", "--quiet", "--method", "greedy", "--score", "magnitude"]


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(r, code: int = 2) -> bool:
    """Exit `code`, one line of output, and no exception but the exit (no traceback)."""
    return (r.exit_code == code and len(r.output.strip().splitlines()) == 1
            and isinstance(r.exception, SystemExit))


def ends_in_one_line(r, code: int) -> bool:
    """As one_line, for a failure after the run began (its first line, where it runs, comes before)."""
    lines = r.output.strip().splitlines()
    return (r.exit_code == code and isinstance(r.exception, SystemExit) and lines[-1].startswith("error: ")
            and "Traceback" not in r.output)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished magnitude run of LeNet-300-100 (a few seconds)."""
    out = tmp_path_factory.mktemp("run") / "run"
    r = cli("prune", "lenet_300_100", "--remove", "2%", "--out", str(out), *FAST)
    assert r.exit_code == 0, r.output
    return out


def state_with(change) -> dict:
    state = {k: v.clone() for k, v in load_model("lenet_300_100").module.state_dict().items()}
    change(state)
    return state


# --- row 3: base weights -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind, message", [
    ("int32", "tensor 2.weight is int32, not floating point"),
    ("nan", "tensor 2.weight holds 1 non-finite value (NaN or infinity)"),
    ("inf", "tensor 4.bias holds 2 non-finite values (NaN or infinity)"),
])
def test_row3_base_weights_must_be_floating_and_finite(tmp_path, run_dir, kind, message):
    def change(state):
        if kind == "int32":
            state["2.weight"] = state["2.weight"].to(torch.int32)
        elif kind == "nan":
            state["2.weight"][0, 0] = float("nan")
        else:
            state["4.bias"][:2] = float("inf")
    weights = tmp_path / "w.safetensors"
    save_state(weights, state_with(change))
    out = tmp_path / "run"
    for args in (["prune", "lenet_300_100", "--remove", "2%", "--weights-file", str(weights), "--out", str(out), *FAST],
                 ["eval", "lenet_300_100", "--weights-file", str(weights), "--eval-samples", "10"],
                 ["verify", str(run_dir / "model.safetensors"), "--weights-file", str(weights)]):
        r = cli(*args)
        assert one_line(r) and message in r.output, (args[0], r.output)
    assert not out.exists()


# --- row 4: a user's folder --------------------------------------------------------------------------

def users_folder(tmp_path) -> tuple[Path, dict]:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"my own model")
    (folder / "manifest.json").write_text('{"mine": true}')
    return folder, {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize("command", [
    ["prune", "lenet_300_100", "--remove", "2%", *FAST],
    ["compare", "lenet_300_100", "--remove", "2%", "--methods", "magnitude", "--points", "1", "--seeds", "1", *FAST[:-4]],
    ["lottery", "lottery-lenet300-mnist", "--levels", "1"],
])
def test_row4_out_on_a_users_folder_is_refused_untouched(tmp_path, command):
    folder, before = users_folder(tmp_path)
    r = cli(*command, "--out", str(folder))
    assert one_line(r) and "holds files connectome did not write (manifest.json, model.safetensors)" in r.output
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == before  # not even a lock


def test_row4_a_users_file_named_like_ours_is_still_theirs(tmp_path):
    folder, before = users_folder(tmp_path)
    (folder / "settings.json").write_text('{"theme": "dark"}')
    r = cli("prune", "lenet_300_100", "--remove", "2%", "--out", str(folder), *FAST)
    assert one_line(r) and "holds files connectome did not write" in r.output, r.output
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.safetensors", "settings.json"]


def test_row4_run_folders_are_marked_and_resume_old_ones_too(tmp_path):
    out = tmp_path / "run"
    args = ["prune", "lenet_300_100", "--remove", "2%", "--out", str(out), *FAST]
    assert cli(*args).exit_code == 0 and (out / cio.MARKER).is_file()
    r = cli(*args, "--resume")  # a finished run resumes, and finds it done
    assert r.exit_code == 0, r.output
    (out / cio.MARKER).unlink()  # a run folder of an earlier version: its lock file tells it
    r = cli(*args, "--resume")
    assert r.exit_code == 0 and (out / cio.MARKER).is_file(), r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("prune", "lenet_300_100", "--remove", "2%", "--out", str(empty), *FAST).exit_code == 0


# --- row 5: one line, never a traceback --------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["prune", "lenet_300_100", "--remove", "2%", *FAST],
    ["compare", "lenet_300_100", "--remove", "2%", "--methods", "magnitude", "--points", "1", "--seeds", "1"],
    ["lottery", "lottery-lenet300-mnist", "--levels", "1"],
])
def test_row5_out_under_a_file(tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = cli(*command, "--out", str(afile / "sub"))
    assert one_line(r) and f"lies under {afile}, which is a file" in r.output, r.output
    assert afile.read_text() == "x"


def test_row5_unwritable_out(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:  # refused before the model and data load
        locked.chmod(0o500)
        r = cli("prune", "lenet_300_100", "--remove", "2%", "--out", str(locked / "run"), *FAST)
        locked.chmod(0o700)
        assert one_line(r) and f"no permission to write in {locked}" in r.output, r.output
        assert list(locked.iterdir()) == []
    # Root writes anywhere, and a check can miss a read-only mount: the kernel's refusal, played here
    # by mkdir, is one line too.
    real = Path.mkdir

    def refuse(self, *a, **kw):
        if self.is_relative_to(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **kw)
    monkeypatch.setattr(Path, "mkdir", refuse)
    r = cli("prune", "lenet_300_100", "--remove", "2%", "--out", str(locked / "run"), *FAST)
    assert one_line(r, 1) and f"{locked / 'run'}: Permission denied" in r.output, r.output
    assert list(locked.iterdir()) == []


def test_row5_full_disk_is_one_line_and_the_run_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["prune", "lenet_300_100", "--remove", "2%", "--out", str(out), *FAST]
    real, calls = os.fsync, []

    def full(fd):  # every write goes through atomic_path's fsync: the third one finds the disk full
        calls.append(fd)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", full)
    r = cli(*args)
    assert ends_in_one_line(r, 1) and "No space left on device" in r.output, r.output
    monkeypatch.setattr(os, "fsync", real)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written file left
    r = cli(*args, "--resume")
    assert r.exit_code == 0, r.output
    assert cli("verify", str(out)).exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["eval", "lenet_300_100", "--eval-samples", "10", "--seed", "99999999999999999999"], "Invalid value for '--seed'"),
    (["eval", "lenet_300_100", "--seed", "-1"], "Invalid value for '--seed'"),  # row 10: prune refuses it too
    (["serve", "--root", "{tmp}/srv", "--port", "-5"], "Invalid value for '--port'"),
    (["serve", "--root", "{tmp}/srv", "--port", "70000"], "Invalid value for '--port'"),
])
def test_row5_out_of_range_numbers_are_usage_errors(tmp_path, args, message):
    r = cli(*(a.format(tmp=tmp_path) for a in args))
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit) and message in r.output, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("args, message", [
    (["eval", "os:system"], "model os:system: building it failed (TypeError: "),
    (["jobs", "--server", "http://[::1"], "--server 'http://[::1' is not a URL"),
    (["serve", "--root", "{tmp}/srv", "--token-file", "/nonexistent/tok"], "token file /nonexistent/tok: No such file"),
])
def test_row5_bad_input_is_one_line(tmp_path, args, message):
    r = cli(*(a.format(tmp=tmp_path) for a in args))
    assert one_line(r) and message in r.output, r.output


def test_row5_registry_entry_without_a_key(tmp_path, run_dir):
    registry = tmp_path / "registry.json"
    assert cli("weights", "publish", str(run_dir), "--name", "lenet_300_100.h25", "--registry", str(registry)).exit_code == 0
    data = json.loads(registry.read_text())
    del data["weights"]["lenet_300_100.h25"]["meta"]["_metrics"]
    registry.write_text(json.dumps(data))
    r = cli("weights", "list", "--registry", str(registry))
    assert one_line(r) and "registry entry 'lenet_300_100.h25' is malformed: it has no '_metrics'" in r.output


# --- row 6: a name that ends in a newline ------------------------------------------------------------

@pytest.mark.parametrize("name", ["lenet_300_100.x\n", "lenet_300_100.x\nother", "\nlenet_300_100.x"])
def test_row6_publish_name_with_a_newline_is_refused(tmp_path, run_dir, name):
    registry = tmp_path / "registry.json"
    r = cli("weights", "publish", str(run_dir), "--name", name, "--registry", str(registry))
    assert r.exit_code == 2 and "use arch.tag" in r.output
    assert not registry.exists() and list(tmp_path.iterdir()) == []


# --- row 8: the setting that changed is named --------------------------------------------------------

def test_row8_resuming_a_learned_run_with_another_method_names_it(tmp_path):
    out = tmp_path / "run"
    learned = ["prune", "lenet_300_100", "--remove", "2%", "--out", str(out), *FAST[:-4],
               "--learn-epochs", "0.5", "--learn-points", "2"]
    assert cli(*learned).exit_code == 0
    r = cli(*learned, "--method", "greedy", "--score", "magnitude", "--resume")
    assert one_line(r) and "holds a run with other settings (method, score" in r.output, r.output
    assert "unreadable" not in r.output


# --- row 9: published metrics are measured ---------------------------------------------------------

def test_row9_consistently_edited_metrics_are_not_published(tmp_path, run_dir):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    manifest = json.loads((run / "manifest.json").read_text())
    real = manifest["result"]["final"]["top1"]
    manifest["result"]["final"]["top1"] = 99.9
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rows = list(csv.DictReader(io.StringIO((run / "curve.csv").read_text())))
    last = max(i for i, row in enumerate(rows) if row.get("eval_top1"))
    rows[last]["eval_top1"] = "99.9"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (run / "curve.csv").write_text(text.getvalue())
    assert cli("verify", str(run)).exit_code == 0  # the files agree with each other: only a measurement tells
    r = cli("verify", str(run), "--measure")
    assert r.exit_code == 1 and "FAIL: " in r.output and "records final top-1 99.90%" in r.output, r.output
    r = cli("verify", str(run_dir), "--measure")
    assert r.exit_code == 0 and "metrics measured again on fashion-mnist (200 images)" in r.output, r.output
    registry = tmp_path / "site" / "registry.json"
    r = cli("weights", "publish", str(run), "--name", "lenet_300_100.edited", "--registry", str(registry))
    assert one_line(r) and "records final top-1 99.90%" in r.output and f"measures {real:.2f}%" in r.output, r.output
    assert r.output.strip().endswith("nothing published")
    assert not registry.parent.exists()
    r = cli("weights", "publish", str(run_dir), "--name", "lenet_300_100.real", "--registry", str(registry))
    assert r.exit_code == 0 and f"top-1 {real:.2f}%" in r.output and "metrics measured again on" in r.output


# --- row 10 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts, remove", [("50%", "30%"), ("150k", "100k"), ("50%", "50k")])
def test_row10_compare_refuses_counts_above_remove(tmp_path, counts, remove):
    out = tmp_path / "cmp"
    r = cli("compare", "lenet_300_100", "--counts", counts, "--remove", remove, "--methods", "magnitude",
            "--seeds", "1", "--out", str(out), *FAST[:-4])
    assert one_line(r) and counts in r.output and "above" in r.output, r.output
    assert not out.exists()


def test_row10_eval_json_is_strict_json(tmp_path):
    weights = tmp_path / "huge.safetensors"  # finite weights whose logits overflow: the loss is NaN
    save_state(weights, state_with(lambda s: s.__setitem__("6.weight", s["6.weight"].sign() * 3e38)))
    r = cli("eval", "lenet_300_100", "--weights-file", str(weights), "--eval-samples", "50", "--json")
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert metrics["loss"] is None and metrics["samples"] == 50


def test_row10_sigint_exits_130(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "connectome", "prune", "lenet_300_100", "--remove", "20%",
                             "--out", str(out), "--calib-samples", "2000", "--batch-size", "100", "--quiet",
                             "--learn-epochs", "50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (out / "state.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # interrupted while it trains, not while it imports
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert err.decode().strip().splitlines()[-1] == "interrupted"
