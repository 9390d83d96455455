"""The pruning engine end to end on the shipped LeNet-300-100 (small calibration and evaluation sets)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from connectome.cli import main
from connectome.io import check_invariant, read_metadata
from connectome.models.load import file_sha256, load_model
from connectome.pruning.flat import prunable_parameters
from connectome.pruning.methods.greedy import MAX_DEFERRALS, Greedy
from connectome.pruning.mask import Mask
from connectome.pruning.results import write_results
from connectome.pruning.settings import PruneSettings
from connectome.pruning.setup import Runtime, prepare

QUIET = Runtime(progress=False)

FAST = ["--calib-samples", "1000", "--eval-samples", "500", "--batch-size", "100", "--quiet"]


def run_cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = run_cli("prune", "lenet_300_100", "--remove", "12345", "--out", str(out), "--eval-every", "2", *FAST)
    assert r.exit_code == 0, r.output
    return out


def test_run_folder_and_exact_count(finished_run):
    for name in ("model.safetensors", "mask.safetensors", "curve.csv", "curve.png", "manifest.json", "log.jsonl"):
        assert (finished_run / name).is_file(), name
    assert (finished_run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = read_metadata(finished_run / "model.safetensors")
    assert meta["removed"] == "12345" and meta["base_model"] == "lenet_300_100" and meta["criterion"] == "learned"
    mask = Mask.load(finished_run / "mask.safetensors")
    assert mask.removed() == 12345
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert manifest["result"]["removed"] == 12345 and manifest["versions"]["torch"] == torch.__version__


def test_invariant_and_mask_round_trip(finished_run):
    base = {k: v.detach() for k, v in load_model("lenet_300_100").module.state_dict().items()}
    pruned = load_file(str(finished_run / "model.safetensors"))
    report = check_invariant(pruned, base)
    assert report.ok and report.zeroed == 12345
    # Applying the packed mask to the base weights reproduces the checkpoint exactly.
    rebuilt = Mask.load(finished_run / "mask.safetensors").apply(base)
    assert all(torch.equal(rebuilt[k], pruned[k]) for k in base)


def test_verify_command(finished_run, tmp_path):
    r = run_cli("verify", str(finished_run))
    assert r.exit_code == 0 and "OK" in r.output and "zeroed 12,345" in r.output
    state = load_file(str(finished_run / "model.safetensors"))
    state["2.weight"][0, 0] += 1e-3  # one weight changed
    from connectome.io import save_state
    save_state(tmp_path / "bad.safetensors", state, read_metadata(finished_run / "model.safetensors"))
    r = CliRunner().invoke(main, ["verify", str(tmp_path / "bad.safetensors")])
    assert r.exit_code == 1


def test_only_conv_and_linear_weights_by_default_and_globs():
    model = load_model("mobilenet_v3_small_fmnist", pretrained=False).module
    names = list(prunable_parameters(model))
    assert names and all(n.endswith(".weight") for n in names)
    assert not any("bias" in n for n in names)
    norm = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert not norm & set(names)
    only_classifier = prunable_parameters(model, include=["net.classifier.*"])
    assert set(only_classifier) == {"net.classifier.0.weight", "net.classifier.3.weight"}
    assert "net.classifier.3.weight" not in prunable_parameters(model, exclude=["*classifier.3*"])


@pytest.mark.parametrize("args,message", [
    (["--remove", "0"], "positive"), (["--remove", "-5"], "malformed"), (["--remove", "1e9"], "malformed"),
    (["--remove", "300k"], "exceeds"), (["--remove", "10%", "--calib-samples", "0"], "calib"),
    (["--remove", "10%", "--criterion", "nope"], "--criterion must be one of"),
    (["--remove", "101%"], "over 100%"), (["--remove", "10%", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--remove", "10%", "--tolerance", "inf"], "--tolerance must be a finite number"),
    (["--remove", "10%", "--calib-samples", "abc"], "--calib-samples must be an integer"),
    (["--remove", "10%", "--eval-samples", "0"], "--eval-samples must be at least 1"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--out", str(out), "--quiet", *args])
    assert r.exit_code == 2 and message in r.output and not out.exists()
    assert len(r.output.strip().splitlines()) == 1


def test_out_naming_a_file_is_refused(tmp_path):
    out = tmp_path / "file"
    out.write_text("x")
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "10%", "--out", str(out), "--quiet"])
    assert r.exit_code == 2 and "is a file" in r.output and out.read_text() == "x"


@pytest.mark.parametrize("body,message", [
    ("calib_samples: abc\n", "calib_samples must be an integer, got 'abc'"),
    ("step: hello\n", "step must be a finite number"),
    ("tolerance: .inf\n", "tolerance must be a finite number"),
    ("bogus: 1\n", "unknown setting 'bogus'"),
])
def test_bad_recipe_is_refused_with_one_line(tmp_path, body, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: prune\nmodel: lenet_300_100\nremove: 10%\n" + body)
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["prune", "--recipe", str(recipe), "--out", str(out)])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_binary_recipe_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(bytes(range(256)) * 4)
    r = CliRunner().invoke(main, ["prune", "--recipe", str(recipe)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1


def test_job_file_runs_like_the_flags(tmp_path, finished_run):
    """`--job` (what the service's workers run) reads the settings as JSON and gives the same run."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": "lenet_300_100", "remove": 12345, "calib_samples": 1000, "eval_samples": 500,
                               "batch_size": 100, "eval_every": 2}))
    r = run_cli("prune", "--job", str(job), "--out", str(tmp_path / "o"), "--quiet")
    assert r.exit_code == 0, r.output
    assert Mask.load(tmp_path / "o" / "mask.safetensors") == Mask.load(finished_run / "mask.safetensors")
    job.write_text(json.dumps({"model": "lenet_300_100", "remove": "1%", "tolerance": float("inf")}))
    r = CliRunner().invoke(main, ["prune", "--job", str(job), "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "tolerance must be a finite number" in r.output and not (tmp_path / "p").exists()


def test_resume_with_other_settings_is_refused(finished_run):
    before = (finished_run / "mask.safetensors").read_bytes()
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "12345", "--out", str(finished_run),
                                  "--resume", "--seed", "7", *FAST])
    assert r.exit_code == 2 and "seed" in r.output
    assert (finished_run / "mask.safetensors").read_bytes() == before


def test_refuses_to_overwrite_without_resume(finished_run):
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "12345", "--out", str(finished_run), *FAST])
    assert r.exit_code == 2 and "--resume" in r.output


@pytest.fixture(scope="module")
def finished_loop(tmp_path_factory):
    """The same run with the greedy loop instead of the default learned mask."""
    out = tmp_path_factory.mktemp("loop")
    r = run_cli("prune", "lenet_300_100", "--remove", "12345", "--out", str(out), "--eval-every", "2",
                "--criterion", "connectome", *FAST)
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("criterion", ["learned", "connectome"])
def test_kill_9_and_resume_gives_the_same_mask(tmp_path, criterion, request):
    """A run killed mid-way and resumed ends with the mask of an uninterrupted run: the default (the
    learned mask, killed between its counts) and the greedy loop (killed between its steps)."""
    finished_run = request.getfixturevalue("finished_run" if criterion == "learned" else "finished_loop")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "connectome", "prune", "lenet_300_100", "--remove", "12345",
           "--out", str(out), "--eval-every", "2", "--criterion", criterion, *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "state.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.exists() and len(json.loads(read_metadata(state)["log"])) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Mask.load(out / "mask.safetensors") == Mask.load(finished_run / "mask.safetensors")
    # Byte for byte: the same decisions give files with the same sha256, in another process and after a resume.
    for name in ("mask.safetensors", "model.safetensors"):
        assert file_sha256(out / name) == file_sha256(finished_run / name), name
    # The readable log was written as the run went and holds every step of the resumed state.
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged == json.loads(read_metadata(out / "state.safetensors")["log"])


def test_restore_cycles_keep_the_budget(tmp_path):
    s = PruneSettings(model="lenet_300_100", remove="5000", calib_samples=800, eval_samples=300, batch_size=100,
                      restore_cycles=3, criterion="fisher")
    run = Greedy(prepare(s), tmp_path / "r", runtime=QUIET)
    log = run.run()
    swaps = [r for r in log if r["phase"] == "swap" and r["accepted"]]
    assert len(swaps) == 3 and all(r["removed"] == 5000 for r in swaps)
    assert sum(r["restored"] for r in swaps) > 0
    write_results(run, "test")
    base = {k: v.detach() for k, v in load_model("lenet_300_100").module.state_dict().items()}
    assert check_invariant(load_file(str(tmp_path / "r" / "model.safetensors")), base).ok


def test_recipe_with_flag_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: prune\nmodel: lenet_300_100\nremove: 2000\ncriterion: magnitude\ncalib_samples: 600\n"
                      "eval_samples: 300\nbatch_size: 100\n")
    r = run_cli("prune", "--recipe", str(recipe), "--remove", "3000", "--out", str(tmp_path / "o"), "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert (m["settings"]["method"], m["settings"]["score"]) == ("greedy", "magnitude") and m["result"]["removed"] == 3000


def test_mispredicted_weights_are_deferred_not_forced(tmp_path):
    """With an acceptance rule no step can pass (the first version's rule: no descent or harmless
    smallest step is kept), smallest steps defer their weights; only after MAX_DEFERRALS failures in
    a row is one taken, and the run still ends at the exact count."""
    s = PruneSettings(model="lenet_300_100", remove="400", calib_samples=600, eval_samples=200, batch_size=100,
                      criterion="random", step=0.00075, min_step=0.00075, max_step=0.00075, tolerance=-1e9,
                      keep_descents=False)
    run = Greedy(prepare(s), tmp_path / "r", runtime=QUIET)
    log = run.run()
    deferred = [r for r in log if r.get("deferred")]
    forced = [r for r in log if r.get("forced")]
    assert len(deferred) >= MAX_DEFERRALS and forced
    assert run.flat.removed() == 400
    # A forced step never re-takes weights that were deferred before it.
    assert not (run.flat.deferred & ~run.flat.mask).any()


CONV_NET = '''
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 5, stride=2), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(200, 10))
'''


def test_runtime_options_change_no_decision(tmp_path, monkeypatch, idx_folder):
    """channels_last and a compiled module (FlatWeights rewrites the weights in place under it) give the
    run of the plain module."""
    from connectome.evaluate import evaluate
    (tmp_path / "convnet_runtime.py").write_text(CONV_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    s = PruneSettings(model="convnet_runtime:build", data=f"mnist:{idx_folder}", remove="30%", calib_samples=240,
                      batch_size=40, step=0.02, max_step=0.05)
    plain = Greedy(prepare(s), tmp_path / "plain", runtime=QUIET)
    plain.run()
    fast = Greedy(prepare(s), tmp_path / "fast", runtime=Runtime(progress=False, channels_last=True, compile="aot_eager"))
    fast.run()
    assert fast.module is not fast.setup.loaded.module  # the compiled wrapper ran the passes
    assert len(plain.log) > 4 and torch.equal(fast.flat.mask, plain.flat.mask)
    assert [r["accepted"] for r in fast.log] == [r["accepted"] for r in plain.log]
    # The compiled module reads the rewritten weights: its loss is the pruned model's, not the dense one's.
    compiled = evaluate(fast.module, fast.setup.accept, 40)
    assert compiled.loss == pytest.approx(evaluate(plain.setup.loaded.module, plain.setup.accept, 40).loss, rel=1e-5)
    assert compiled.loss != pytest.approx(plain.log[0]["accept_loss"], rel=1e-3)


def test_runtime_flags_do_not_block_a_resume(finished_run, tmp_path):
    """--channels-last, --workers and --eval-every change no decision: a run stopped short resumes with
    them and ends at the mask of the run made without them."""
    from connectome.pruning.methods.learned import Learned

    s = PruneSettings(model="lenet_300_100", remove="12345", calib_samples=1000, eval_samples=500, batch_size=100,
                      device="cpu")
    stopped = tmp_path / "stopped"
    first = Learned(prepare(s), stopped, runtime=QUIET, chunk=2)
    first.run(max_chunks=1)  # two batches into the first count: nothing recorded yet but the dense row
    assert first.pos["point"] == 0 and not (stopped / "mask.safetensors").exists()
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "12345", "--out", str(stopped), "--resume",
                                  "--eval-every", "2", "--channels-last", "--workers", "1", *FAST])
    assert r.exit_code == 0, r.output
    assert Mask.load(stopped / "mask.safetensors") == Mask.load(finished_run / "mask.safetensors")


def test_a_harmless_smallest_step_is_kept(tmp_path):
    """The new rule: at the smallest size a step that does no measurable harm is kept even when its
    prediction was far better (here, an impossible tolerance), so nothing is deferred for helping less."""
    s = PruneSettings(model="lenet_300_100", remove="400", calib_samples=600, eval_samples=200, batch_size=100,
                      criterion="random", step=0.00075, min_step=0.00075, max_step=0.00075, tolerance=-1e9)
    run = Greedy(prepare(s), tmp_path / "r", runtime=QUIET)
    log = run.run()
    assert run.flat.removed() == 400
    assert not any(r.get("forced") for r in log)
    assert all(r["accepted"] or r["actual"] > 2 * r["stderr"] for r in log[1:])  # only harm is refused
