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


def estimate(args, splits) -> None:
    """Seconds of one training and of the whole benchmark for Conv-2, Conv-4 and Conv-6 on this CPU,
    from the median trainer iteration (dense: the upper end, pruned levels cost about the same) and the
    validation's cost per image (5,000 images every 100 iterations, the test split twice at the end)."""
    from bench.lottery import NETWORKS, phases
    from connectome.evaluate import evaluate
    from connectome.lottery.trainer import eval_batch

    out = {"git_commit": git_commit(), "machine": machine(), "nice": os.nice(0),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "networks": {}}
    tmp = Path("/tmp") / f"lottery-speed-{time.time_ns()}"
    tmp.mkdir()
    for name in ("conv2", "conv4", "conv6"):
        s = LotterySettings.from_recipe(str(ROOT / "recipes" / f"lottery-{name}-cifar10.yaml"),
                                        {"data": args.data, "iterations": args.iterations,
                                         "eval_every": args.iterations, "checkpoint_every": 10 ** 9, "device": "cpu"})
        data = Data(subset(splits.train, 45000, 0), subset(splits.train, 60, 1), None)
        init = initial_state(name, "cifar10", 0)
        mask = Mask({n: torch.ones(init[n].shape, dtype=torch.bool) for n in layer_kinds(build(name, "cifar10"))})
        its = []
        for _ in range(args.rounds):
            m = build(name, "cifar10")
            m.load_state_dict(init)
            its += trainer(m, mask, data, s, args.iterations, tmp)[1:-1]  # the first and the validating one aside
        val = subset(splits.train, 1000, 2)
        t0 = time.perf_counter()
        evaluate(m, val, eval_batch(name, "cpu"), "cpu")
        per_image = (time.perf_counter() - t0) / len(val)
        full = LotterySettings.from_recipe(str(ROOT / "recipes" / f"lottery-{name}-cifar10.yaml"))
        it = statistics.median(its)
        training = full.iterations * it + (full.iterations // full.eval_every) * full.val_samples * per_image \
            + 2 * len(splits.test) * per_image
        jobs = set()
        for seed, levels, controls in phases([0, 1, 2], [], NETWORKS[name]):
            jobs |= {(seed, lv, "ticket") for lv in range(levels + 1)}
            jobs |= {(seed, lv, arm) for lv in controls for arm in ("random_reinit", "random_prune")}
        out["networks"][name] = {
            "median_seconds_per_iteration": round(it, 4), "eval_seconds_per_image": round(per_image, 6),
            "iterations": full.iterations, "seconds_per_training": round(training),
            "trainings_3_seeds": len(jobs), "hours_3_seeds_one_core": round(len(jobs) * training / 3600, 1)}
        print(name, out["networks"][name], flush=True)
    out["hours_all_one_core"] = round(sum(n["hours_3_seeds_one_core"] for n in out["networks"].values()), 1)
    write_text(args.out, json.dumps(out, indent=1))
    print(f"all three networks, 3 seeds: {out['hours_all_one_core']} h on one core", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="cifar10:../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz")
    ap.add_argument("--iterations", type=int, default=30, help="Iterations per loop per round.")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--estimate", action="store_true",
                    help="Instead: the time of one training and of the benchmark for Conv-2/4/6 on this CPU.")
    ap.add_argument("--out", default=None, help="Results file (default: bench/results/lottery-conv2-speed.json, "
                                                "with --estimate lottery-conv-estimate.json).")
    args = ap.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" / ("lottery-conv-estimate.json" if args.estimate
                                                             else "lottery-conv2-speed.json"))
    torch.set_num_threads(args.threads)
    if args.estimate:
        return estimate(args, load_dataset(args.data))
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
