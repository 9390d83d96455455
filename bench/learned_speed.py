"""The learned mask's cost per batch against a plain forward and backward pass of the same model.

    OMP_NUM_THREADS=2 python bench/learned_speed.py --model efficientnet_lite0 --batch 50

(a) plain: the model's own forward and backward with gradients on its weights (what training it would
cost); (b) learned: one training batch of the learned mask (connectome.pruning.methods.learned.Learned._loss and
its backward: the top-k, the straight-through masked weights, a functional forward, the scores'
gradient), Adam's step included; (c) the training views (random resized crop and flip per image) alone.
The target is (b)/(a) about 1.0 plus the top-k. Batches alternate between (a) and (b) so that a
neighbour's load on the machine falls on both alike; the median of each is reported.

Writes bench/results/learned-speed-<device>.json with the commit, machine and date.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance  # noqa: E402

from connectome.data.augment import TrainingViews  # noqa: E402
from connectome.pruning.methods.learned import Learned  # noqa: E402
from connectome.pruning.settings import PruneSettings  # noqa: E402
from connectome.pruning.setup import Runtime, prepare  # noqa: E402

SHAPES = {"efficientnet_lite0": (3, 224, 224), "lenet_300_100": (1, 28, 28)}
DATA = {"efficientnet_lite0": "imagenet:../shared/data/imagenette"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    s = PruneSettings(model=args.model, remove="30%", data=DATA.get(args.model), calib_samples=100,
                      batch_size=args.batch, device="cpu")
    setup = prepare(s)
    rt = Runtime.of(s, "cpu", progress=False, convolutional=Runtime.convolutional(setup))
    learner = Learned(setup, Path(tempfile.mkdtemp()) / "run", runtime=rt)
    k = setup.target
    x = torch.randn(args.batch, *SHAPES[args.model])
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000 if args.model != "lenet_300_100" else 10, (args.batch,))
    model = setup.loaded.module

    def plain():
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        F.cross_entropy(model(x), y).backward()
        for p in model.parameters():
            p.requires_grad_(False)

    def learned():
        learner.opt.zero_grad(set_to_none=True)
        learner._loss(x, y, k).backward()
        learner.opt.step()

    views = TrainingViews()
    times = {"plain": [], "learned": [], "views": []}
    for fn in (plain, learned):  # warm-up: allocations, Adam's state
        fn()
    for r in range(args.repeats):
        for name, fn in (("plain", plain), ("learned", learned), ("views", lambda: views(x, r))):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {n: statistics.median(v) for n, v in times.items()}
    result = {"provenance": provenance(), "model": args.model, "batch": args.batch, "repeats": args.repeats,
              "seconds": times, "images_per_second": {n: args.batch / t for n, t in med.items()},
              "learned_over_plain": med["learned"] / med["plain"],
              "learned_with_views_over_plain": (med["learned"] + med["views"]) / med["plain"]}
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))
    out = Path(__file__).resolve().parent / "results" / "learned-speed-cpu.json"
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
