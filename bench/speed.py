"""Throughput of (a) plain forward+backward, (b) a statistics pass, (c) one full prune step, and the
peak memory of each, on synthetic tensors. Each case runs in its own process so that peak memory is its own.

    python bench/speed.py [--device cuda] [--models lenet_300_100,mobilenet_v3_small_fmnist,mobilenet_v3_large]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance  # noqa: E402

SHAPES = {"lenet_300_100": (1, 28, 28), "mobilenet_v3_small_fmnist": (1, 28, 28), "mobilenet_v3_large": (3, 224, 224)}
# Batches per measurement: a statistics pass has a fixed cost per call (allocating and finishing the
# float64 sums) that a real pass of ~10k images amortises; small models need many batches to show it.
BATCHES = {"lenet_300_100": 160, "mobilenet_v3_small_fmnist": 20, "mobilenet_v3_large": 3}


def build(name: str):
    from connectome.models import load_model
    if name == "mobilenet_v3_large":
        from torchvision.models import mobilenet_v3_large
        return mobilenet_v3_large()  # random weights: speed does not depend on their values
    return load_model(name, pretrained=False).module


def measure(name: str, case: str, batch: int, batches: int, device: str) -> dict:
    from connectome.data import ImageTensors
    from connectome.prune import FlatWeights, prunable_parameters
    from connectome.statistics import collect

    torch.manual_seed(0)
    model = build(name).to(device).eval()
    shape = SHAPES[name]
    n = batch * batches
    data = ImageTensors(torch.randint(0, 256, (n, *shape), dtype=torch.uint8), torch.randint(0, 10, (n,)))
    params = prunable_parameters(model)
    amp = torch.bfloat16 if device == "cuda" else None

    def plain():
        from connectome.data import batches as iterate
        for x, y in iterate(data, batch):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device_type=device, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(model(x).float(), y)
            torch.autograd.grad(loss, list(params.values()))

    def stats():
        collect(model, params, data, batch, device, autocast_dtype=amp)

    def step():
        # One full step as the loop takes it: statistics, global scores, top-k, write, acceptance pass.
        from connectome import criteria
        from connectome.evaluate import evaluate
        s = collect(model, params, data, batch, device, autocast_dtype=amp)
        flat = FlatWeights(params)
        w = flat.split(flat.base)
        scores = flat.cat({k: criteria.get("connectome").scores(k, w[k], s, None) for k in flat.names})
        flat.mask[torch.topk(scores, max(1, len(scores) // 100), largest=False).indices] = False
        flat.write()
        evaluate(model, data.subset(range(min(n, max(batch, n // 4)))), batch, device, autocast_dtype=amp)

    fn = {"plain": plain, "stats": stats, "step": step}[case]
    fn()  # warm-up (allocations, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    prunable = sum(p.numel() for p in params.values())
    return {"model": name, "case": case, "batch": batch, "images": n, "seconds": round(seconds, 3),
            "images_per_s": round(n / seconds, 1), "peak_bytes": peak, "prunable": prunable,
            "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default=",".join(SHAPES))
    ap.add_argument("--batches", type=int, default=None, help="batches per measurement (default: per model)")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # child process: MODEL CASE BATCH
    args = ap.parse_args()
    if args.one:
        name, case, batch = args.one
        print(json.dumps(measure(name, case, int(batch), args.batches or BATCHES[name], args.device)))
        return
    batch = 256 if args.device == "cuda" else 64
    rows = []
    for name in args.models.split(","):
        for case in ("plain", "stats", "step"):
            out = subprocess.run([sys.executable, __file__, "--device", args.device,
                                  "--batches", str(args.batches or BATCHES[name]), "--one", name, case, str(batch)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{name:28s} {case:6s} {r['images_per_s']:10.1f} img/s   peak {r['peak_bytes'] / 2**20:8.0f} MiB", flush=True)
    summary = {}
    for name in args.models.split(","):
        by = {r["case"]: r for r in rows if r["model"] == name}
        summary[name] = {"stats_over_plain": round(by["stats"]["images_per_s"] / by["plain"]["images_per_s"], 3),
                         "step_over_plain": round(by["step"]["images_per_s"] / by["plain"]["images_per_s"], 3)}
        print(f"{name}: statistics pass at {summary[name]['stats_over_plain']:.2f}x plain forward+backward")
    out = Path(__file__).resolve().parent / "results" / f"speed-{args.device}.json"
    # Models not measured this time keep their earlier rows, each with the provenance it was taken under.
    old = json.loads(out.read_text()) if out.exists() else {}
    for r in rows:
        r["provenance"] = provenance()
    rows = [r for r in old.get("rows", []) if r["model"] not in summary] + rows
    summary = {**{k: v for k, v in old.get("summary", {}).items() if k not in summary}, **summary}
    result = {"provenance": provenance(), "device": args.device, "batch": batch, "rows": rows, "summary": summary}
    out.write_text(json.dumps(result, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
