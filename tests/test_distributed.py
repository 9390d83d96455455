"""Data-parallel statistics with torch.distributed (gloo, 2 processes on the CPU) equal one process."""

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from connectome.data import ImageTensors
from connectome.mask import Mask


def tiny_setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    data = ImageTensors(torch.randint(0, 256, (200, 1, 4, 4), dtype=torch.uint8), torch.randint(0, 3, (200,)))
    return model, {"1.weight": model[1].weight, "3.weight": model[3].weight}, data


def _worker(rank, world, init_file, out_dir):
    from connectome.evaluate import evaluate
    from connectome.statistics import collect
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
    from connectome.statistics import collect
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


def test_torchrun_prune_gives_the_single_process_mask(tmp_path):
    args = ["prune", "lenet_300_100", "--remove", "3000", "--calib-samples", "800", "--eval-samples", "300",
            "--batch-size", "100", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "connectome", *args,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "connectome", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    assert Mask.load(tmp_path / "two" / "mask.safetensors") == Mask.load(tmp_path / "one" / "mask.safetensors")
