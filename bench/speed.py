"""Throughput of (a) plain forward+backward, (b) a statistics pass, (c) one full prune step, and the
peak memory of each, on synthetic tensors, at the same batch, precision and memory format. Each case
runs in its own process so that peak memory is its own.

    python bench/speed.py                                    # CPU: all cores, float32
    python bench/speed.py --device cuda --compile            # GPU: bf16 autocast, channels_last, compiled
    python bench/speed.py --device cuda --models mobilenet_v3_large --images 50000   # the 50,000-image pass

Targets: (b)/(a) >= 0.8 for MobileNetV3-Large at 224 px; on a GPU, 50,000 images per statistics pass
in under 60 s (`seconds_per_50k`, measured when --images 50000, else projected from the throughput).
"""

import argparse
import json
import os
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
CUDA_BATCHES = {"lenet_300_100": 160, "mobilenet_v3_small_fmnist": 40, "mobilenet_v3_large": 40}


def build(name: str):
    from connectome.models.load import load_model
    if name == "mobilenet_v3_large":
        from torchvision.models import mobilenet_v3_large
        return mobilenet_v3_large()  # random weights: speed does not depend on their values
    return load_model(name, pretrained=False).module


def measure(name: str, case: str, batch: int, images: int, device: str, channels_last: bool, compile_: bool) -> dict:
    from connectome.data import ImageTensors, batches
    from connectome.evaluate import evaluate
    from connectome.pruning.flat import FlatWeights, prunable_parameters
    from connectome.pruning.statistics import collect

    torch.manual_seed(0)
    model = build(name).to(device).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = prunable_parameters(model)
    net = torch.compile(model) if compile_ else model  # the same wrapper for every case, as Run uses it
    data = ImageTensors(torch.randint(0, 256, (images, *SHAPES[name]), dtype=torch.uint8),
                        torch.randint(0, 10, (images,)))
    amp = torch.bfloat16 if device == "cuda" else None  # the same precision for every case
    plist = list(params.values())

    def plain(ds):
        # Forward and backward to the prunable weights over the same batches, on the same data path.
        for x, y in batches(ds, batch, device=device):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(net(x).float(), y)
            torch.autograd.grad(loss, plist)

    def stats(ds):
        collect(net, params, ds, batch, device, autocast_dtype=amp, channels_last=channels_last)

    def step(ds):
        # One full step as the loop takes it: statistics, global scores, top-k, write, acceptance pass.
        from connectome.pruning import scores
        s = collect(net, params, ds, batch, device, autocast_dtype=amp, channels_last=channels_last)
        flat = FlatWeights(params)
        w = flat.split(flat.base)
        scores = flat.cat({k: scores.get("connectome").scores(k, w[k], s, None) for k in flat.names})
        flat.mask[torch.topk(scores, max(1, len(scores) // 100), largest=False).indices] = False
        flat.write()
        evaluate(net, ds.subset(range(min(len(ds), max(batch, len(ds) // 4)))), batch, device, autocast_dtype=amp,
                 channels_last=channels_last)

    fn = {"plain": plain, "stats": stats, "step": step}[case]
    fn(data.subset(range(min(images, 2 * batch))))  # warm-up: allocations, kernel choice, compilation
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    fn(data)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"model": name, "case": case, "batch": batch, "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1), "peak_bytes": peak,
            "prunable": sum(p.numel() for p in plist),
            "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "precision": "bf16 autocast" if amp else "float32", "channels_last": channels_last,
            "compile": compile_, "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default=",".join(SHAPES))
    ap.add_argument("--cases", default="plain,stats,step")
    ap.add_argument("--batch", type=int, default=None, help="default: 256 on CUDA, 64 on CPU")
    ap.add_argument("--batches", type=int, default=None, help="batches per measurement (default: per model)")
    ap.add_argument("--images", type=int, default=None, help="images per measurement (overrides --batches)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (default: every core)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="default: on for CUDA, off on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model for every case")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure the cases this many times, interleaved, and keep each case's fastest: "
                         "on a shared machine other jobs only ever slow a measurement down")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # child process: MODEL CASE BATCH
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    channels_last = args.device == "cuda" if args.channels_last is None else args.channels_last
    batch = args.batch or (256 if args.device == "cuda" else 64)

    def images_for(name):
        return args.images or batch * (args.batches or (CUDA_BATCHES if args.device == "cuda" else BATCHES)[name])

    if args.one:
        name, case, batch = args.one
        print(json.dumps(measure(name, case, int(batch), images_for(name), args.device, channels_last, args.compile)))
        return
    rows = []
    models = args.models.split(",")
    for name in models:
        best = {}
        for _ in range(args.repeat):
            for case in args.cases.split(","):
                cmd = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads),
                       "--images", str(images_for(name)), "--one", name, case, str(batch),
                       "--channels-last" if channels_last else "--no-channels-last"] + (["--compile"] if args.compile else [])
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"{name} {case} failed:\n{out.stderr[-3000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{name:28s} {case:6s} {r['images_per_s']:10.1f} img/s   peak {r['peak_bytes'] / 2**20:8.0f} MiB", flush=True)
                runs = best.get(case, {}).get("all_images_per_s", []) + [r["images_per_s"]]
                if case not in best or r["images_per_s"] > best[case]["images_per_s"]:
                    best[case] = r
                best[case]["all_images_per_s"] = runs
        rows += best.values()
    summary = {}
    for name in models:
        by = {r["case"]: r for r in rows if r["model"] == name}
        if "stats" not in by:
            continue
        summary[name] = {"stats_images_per_s": by["stats"]["images_per_s"],
                         "seconds_per_50k": round(50000 / by["stats"]["images_per_s"], 1)}
        if "plain" in by:
            summary[name]["stats_over_plain"] = round(by["stats"]["images_per_s"] / by["plain"]["images_per_s"], 3)
            print(f"{name}: statistics pass at {summary[name]['stats_over_plain']:.2f}x plain forward+backward, "
                  f"{summary[name]['seconds_per_50k']:.0f} s per 50,000 images")
        if "step" in by and "plain" in by:
            summary[name]["step_over_plain"] = round(by["step"]["images_per_s"] / by["plain"]["images_per_s"], 3)
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
