"""Data-parallel statistics with torch.distributed (gloo, 2 processes on the CPU) equal one process,
and so does a torchrun run killed mid-way and resumed."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from connectome.io import read_metadata
from connectome.data import ImageTensors
from connectome.pruning.mask import Mask


def tiny_setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    data = ImageTensors(torch.randint(0, 256, (200, 1, 4, 4), dtype=torch.uint8), torch.randint(0, 3, (200,)))
    return model, {"1.weight": model[1].weight, "3.weight": model[3].weight}, data


def _worker(rank, world, init_file, out_dir):
    from connectome.evaluate import evaluate
    from connectome.pruning.statistics import collect
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model, params, data = tiny_setup()
    stats = collect(model, params, data, batch_size=16)  # 13 batches: ranks get 7 and 6
    m = evaluate(model, data, batch_size=16)
    if rank == 0:
        torch.save({"grad": stats.grad, "second": stats.second, "loss": stats.loss, "eval": m.loss,
                    "top1": m.top1, "n": m.samples}, Path(out_dir) / "dist.pt")
    dist.destroy_process_group()


def test_all_reduced_statistics_equal_a_single_process(tmp_path):
    from connectome.evaluate import evaluate
    from connectome.pruning.statistics import collect
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "dist.pt")
    model, params, data = tiny_setup()
    ref = collect(model, params, data, batch_size=16)
    for k in params:
        assert torch.allclose(got["grad"][k], ref.grad[k], rtol=1e-5, atol=1e-9)
        assert torch.allclose(got["second"][k], ref.second[k], rtol=1e-5, atol=1e-9)
    m = evaluate(model, data, batch_size=16)
    assert abs(got["loss"] - ref.loss) < 1e-9 and abs(got["eval"] - m.loss) < 1e-9
    assert got["top1"] == m.top1 and got["n"] == 200


# Small steps (about 11 of them) so that a run can be killed between two.
PRUNE = ["prune", "lenet_300_100", "--remove", "3000", "--calib-samples", "800", "--eval-samples", "300",
         "--batch-size", "100", "--step", "0.001", "--max-step", "0.002", "--device", "cpu", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks on two cores: one thread each
TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2", "-m", "connectome"]


@pytest.fixture(scope="module")
def single_process_mask(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    one = subprocess.run([sys.executable, "-m", "connectome", *PRUNE, "--out", str(out)],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    return Mask.load(out / "mask.safetensors")


def test_torchrun_prune_gives_the_single_process_mask(tmp_path, single_process_mask):
    two = subprocess.run([*TORCHRUN, *PRUNE, "--out", str(tmp_path / "two")], capture_output=True, text=True,
                         env=ENV, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert Mask.load(tmp_path / "two" / "mask.safetensors") == single_process_mask


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: torchrun starts its ranks in sessions of their own."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier]
        found += children
        frontier = children
    return found


def test_torchrun_killed_and_resumed_gives_the_single_process_mask(tmp_path, single_process_mask):
    """kill -9 of torchrun and both ranks mid-run; `torchrun ... --resume` ends with the mask of an
    uninterrupted single-process run."""
    out = tmp_path / "killed"
    cmd = [*TORCHRUN, *PRUNE, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    state = out / "state.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline:
        with contextlib.suppress(OSError, KeyError, ValueError):  # not yet written
            if len(json.loads(read_metadata(state)["log"])) >= 4:
                break
        time.sleep(0.05)
    for pid in [proc.pid, *descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    steps_at_kill = len(json.loads(read_metadata(state)["log"]))
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) > steps_at_kill and log[-1]["removed"] == 3000  # it went on from where it was killed
    assert Mask.load(out / "mask.safetensors") == single_process_mask
