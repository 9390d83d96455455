"""Benchmark: what masking costs in the lottery trainer. Images per second of Conv-2 training batches
(batch 60, Adam) in connectome's Trainer, dense and at a pruned level's mask, against a plain PyTorch
loop of the same network on the same in-memory data (no mask; torch's default Adam, and the fused
Adam the trainer uses, so that the mask's own cost shows). Rounds alternate
the loops so that a neighbour's load falls on all of them alike. Each iteration is timed on its own and
the median iteration counts: on cores shared with other jobs a preempted iteration is an outlier, not
a shift of the whole round (the trainer's one validation at the end of a round is one such outlier).

    OMP_NUM_THREADS=1 .venv/bin/python bench/lottery_speed.py --data cifar10:../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.lottery import git_commit, machine  # noqa: E402
from connectome.data import batches, load_dataset, subset  # noqa: E402
from connectome.io import write_text  # noqa: E402
from connectome.lottery.networks import build, initial_state, layer_kinds  # noqa: E402
from connectome.lottery.settings import LotterySettings  # noqa: E402
from connectome.lottery.strategies import make_strategy  # noqa: E402
from connectome.lottery.trainer import Data, Trainer  # noqa: E402
from connectome.pruning.mask import Mask  # noqa: E402


def plain(model, train, s, iterations: int, fused: bool = False) -> list[float]:
    """The loop a PyTorch user writes: shuffled slices of the uint8 images, /255, Adam (torch's default
    foreach kernel; `fused`: the trainer's, so that the difference is the masking alone)."""
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, fused=fused)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    model.train()
    times = [time.perf_counter()]
    for i in range(iterations):
        idx = order[i * s.batch_size:(i + 1) * s.batch_size]
        x, y = train.images[idx].float().div_(255), train.labels[idx]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter())
    return [b - a for a, b in zip(times, times[1:])]


def trainer(model, mask, data, s, iterations: int, tmp: Path) -> list[float]:
    """connectome's Trainer for `iterations`, each timed from the end of the one before."""
    times = []
    t = Trainer(s, data, "cpu", tmp / "checkpoint.safetensors", progress=False,
                on_iteration=lambda *job_and_it: times.append(time.perf_counter()))
    times.append(time.perf_counter())
    t.train(("speed",), model, mask, 0)
    return [b - a for a, b in zip(times, times[1:])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="cifar10:../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz")
    ap.add_argument("--iterations", type=int, default=30, help="Iterations per loop per round.")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lottery-conv2-speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = LotterySettings.from_recipe(str(ROOT / "recipes" / "lottery-conv2-cifar10.yaml"),
                                    {"data": args.data, "iterations": args.iterations, "eval_every": args.iterations,
                                     "checkpoint_every": 10 ** 9, "device": "cpu"})
    splits = load_dataset(s.data)
    train = subset(splits.train, 45000, 0)
    data = Data(train, subset(splits.train, 60, 1), None)
    init = initial_state("conv2", "cifar10", 0)
    kinds = layer_kinds(build("conv2", "cifar10"))
    dense = Mask({n: torch.ones(init[n].shape, dtype=torch.bool) for n in kinds})
    # Level 4's mask (about 41% of the weights remain) from the initial magnitudes: what masking costs
    # does not depend on which weights survive.
    pruned, strategy = dense, make_strategy(s, kinds)
    for _ in range(4):
        pruned = strategy.prune(init, pruned)

    def model(mask=None):
        m = build("conv2", "cifar10")
        m.load_state_dict(mask.apply(init) if mask is not None else init)
        return m

    tmp = Path("/tmp") / f"lottery-speed-{time.time_ns()}"
    tmp.mkdir()
    loops = {"plain": lambda: plain(model(), train, s, args.iterations),
             "plain_fused_adam": lambda: plain(model(), train, s, args.iterations, fused=True),
             "trainer_dense": lambda: trainer(model(dense), dense, data, s, args.iterations, tmp),
             "trainer_pruned": lambda: trainer(model(pruned), pruned, data, s, args.iterations, tmp)}
    for f in loops.values():  # warm-up: allocator, kernels' first calls
        f()
    seconds = {k: [] for k in loops}
    for r in range(args.rounds):
        for k, f in loops.items():
            seconds[k] += f()
        print(f"round {r}: " + ", ".join(f"{k} {statistics.median(v):.3f} s/it" for k, v in seconds.items()), flush=True)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    out = {"git_commit": git_commit(), "machine": machine(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "network": "conv2", "batch_size": s.batch_size, "iterations_per_round": args.iterations,
           "rounds": args.rounds, "threads": args.threads, "data": s.data,
           "pruned_percent_remaining": round(100 * pruned.kept() / pruned.total(), 1),
           "images_per_second": {k: round(s.batch_size / v, 1) for k, v in median.items()},
           "median_seconds_per_iteration": {k: round(v, 4) for k, v in median.items()},
           "mean_seconds_per_iteration": {k: round(statistics.mean(v), 4) for k, v in seconds.items()},
           "ratio_to_plain": {k: round(v / median["plain"], 3) for k, v in median.items()},
           "ratio_to_plain_fused_adam": {k: round(v / median["plain_fused_adam"], 3) for k, v in median.items()},
           "load_average_at_end": os.getloadavg()}
    write_text(args.out, json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("images_per_second", "ratio_to_plain", "ratio_to_plain_fused_adam")}, indent=1))


if __name__ == "__main__":
    main()
