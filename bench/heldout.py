"""Held-out benchmark: each method judged on ImageNet images that no decision of it ever saw.

    OMP_NUM_THREADS=1 python bench/heldout.py --variants learned,magnitude,wanda --folds 0,1,2,3,4
    python bench/heldout.py --report

The 1,000 ImageNet sample images (one per class, shared/data/imagenet-sample) are dealt into 5 folds of
200 by a fixed permutation. For fold k, the other 800 images are the calibration set a user would give
(640 decide, 160 accept, as `prune` splits them) and fold k's 200 images are scored: no method ranks,
trains, selects or stops on them. Over the 5 folds every image is scored once, by a mask that never
saw it, so the mean over folds is a top-1 on 1,000 images of 1,000 classes (binomial SE about 1.3
points), and methods are compared on the same images: the paired difference against magnitude, per
image, has a standard error far below that of either top-1.

Each (variant, fold) is a resumable unit: its learned run folder and its per-image results live under
bench/logs/heldout/ (ignored by git); `--report` joins whatever is finished into
bench/results/quality-efficientnet_lite0-imagenet-heldout.json (rows of method, fold, removed, top1,
loss; the dense rows; paired differences; the default) and prints the table.
"""

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance  # noqa: E402

from connectome.evaluate import evaluate  # noqa: E402
from connectome.pruning import scores  # noqa: E402
from connectome.pruning.methods import one_shot as shot  # noqa: E402
from connectome.pruning.registry import METHODS  # noqa: E402
from connectome.pruning.settings import PruneSettings  # noqa: E402
from connectome.pruning.setup import Runtime, prepare  # noqa: E402
from connectome.sizes import parse_count  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample" / "train"
FOLDS, FOLD_SEED = 5, 0
COUNTS = ["5%", "10%", "20%", "30%"]
WORK = ROOT / "bench" / "logs" / "heldout"
RESULTS = ROOT / "bench" / "results" / "quality-efficientnet_lite0-imagenet-heldout.json"
# What a user runs: `connectome prune efficientnet_lite0 --data imagenet:FOLD --remove 30%` with every default
# but the calibration size (all 800 images) and a batch that fits two cores.
BASE = dict(model="efficientnet_lite0", remove="30%", calib_samples=800, accept_fraction=0.2, batch_size=50,
            seed=0, cache_calib="data/decoded", device="cpu")
# variant -> settings over BASE. One-shot variants rank once and cut at every count.
VARIANTS = {
    "learned": dict(method="learned"),
    "magnitude": dict(method="one-shot", score="magnitude"),
    "wanda": dict(method="one-shot", score="wanda"),
    "learned-kd": dict(method="learned", learn_distill=1.0),
    "learned-kd50": dict(method="learned", learn_distill=0.5),
    "learned-paired": dict(method="learned", learn_accept="paired"),
    "learned-kd50-paired": dict(method="learned", learn_distill=0.5, learn_accept="paired"),
    "learned-restart": dict(method="learned", learn_restart=True),
}


def fold_folder(k: int) -> Path:
    """data/imagenet-heldout/fold<k>: train/ links the 800 images outside fold k, val/ the 200 inside."""
    images = sorted(SAMPLE.glob("*/*.JPEG"))
    if len(images) != 1000:
        raise SystemExit(f"{SAMPLE}: expected the 1,000 ImageNet sample images, found {len(images)}")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(FOLD_SEED)).tolist()
    size = len(images) // FOLDS
    held = set(perm[k * size:(k + 1) * size])
    root = ROOT / "data" / "imagenet-heldout" / f"fold{k}"
    for i, image in enumerate(images):
        link = root / ("val" if i in held else "train") / image.parent.name / image.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(image.resolve())
    return root


def per_image(setup, rt) -> dict:
    m = evaluate(setup.loaded.module, setup.evaluation, setup.settings.batch_size, setup.device,
                 autocast_dtype=rt.autocast_dtype, channels_last=rt.channels_last, keep_per_sample=True)
    return {"top1": m.top1, "loss": m.loss, "correct": [int(c) for c in m.per_correct.tolist()],
            "losses": [round(v, 5) for v in m.per_sample.tolist()]}


def run_unit(variant: str, k: int) -> None:
    """One variant on one fold: every count's mask scored image by image on the fold's 200 images."""
    path = WORK / f"{variant}-fold{k}.json"
    if path.exists() and json.loads(path.read_text()).get("done"):
        return
    lock = WORK / f"{variant}-fold{k}.lock"  # two processes may share the queue: a unit is one's at a time
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        print(f"{variant} fold {k}: taken by another process ({lock})", flush=True)
        return
    try:
        _run_unit(variant, k, path)
    finally:
        os.close(fd)
        lock.unlink()


def _run_unit(variant: str, k: int, path: Path) -> None:
    s = PruneSettings.from_mapping({**BASE, **VARIANTS[variant], "data": f"imagenet:{fold_folder(k)}"}, variant)
    setup = prepare(s, "cpu")
    from connectome.data.decoded import cache_calibration
    setup = cache_calibration(setup, s.cache_calib, s.workers)
    rt = Runtime.of(s, "cpu", progress=False, convolutional=Runtime.convolutional(setup))
    if rt.channels_last:
        setup.loaded.module.to(memory_format=torch.channels_last)
    counts = [parse_count(c, setup.flat.prunable()) for c in COUNTS]
    out = json.loads(path.read_text()) if path.exists() else {"variant": variant, "fold": k, "rows": {}}
    start = time.time() - out.get("seconds", 0.0)

    def keep(removed: int, result: dict) -> None:
        out["rows"][str(removed)] = result
        out["seconds"] = round(time.time() - start, 1)
        path.write_text(json.dumps(out))

    flat = setup.flat
    if "0" not in out["rows"]:
        flat.reset()
        keep(0, per_image(setup, rt))
    if s.method == "one-shot":
        score = scores.get(s.score, z=s.confidence)
        needed, norms = shot.pass_needed([score], s.unknown_last)
        ordered = shot.order(setup, score, shot.statistics(setup, rt, norms) if needed else None, s.seed)
        for c in counts:
            shot.cut(flat, ordered, c)
            keep(c, per_image(setup, rt))
    else:
        run = METHODS[s.method].for_grid(setup, WORK / f"{variant}-fold{k}-run", counts, rt)

        def on_step(row):
            if row.get("phase") != "dense":  # the model holds the count's mask now
                keep(flat.removed(), {**per_image(setup, rt), "train_loss": row.get("train_loss"),
                                      "accept_top1": row.get("accept_top1"), "accept_loss": row.get("accept_loss"),
                                      "batches": row.get("batches")})
        run.on_step = on_step
        run.run()
    out["done"] = True
    out["provenance"] = provenance()
    path.write_text(json.dumps(out))
    print(f"{variant} fold {k}: {out['seconds']:.0f} s", flush=True)


def paired(a: list[int], b: list[int]) -> tuple[float, float]:
    """Mean and standard error of the per-image difference a - b, in points."""
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    return 100 * d.mean().item(), 100 * d.std().item() / math.sqrt(len(d))


def report() -> None:
    units = [json.loads(p.read_text()) for p in sorted(WORK.glob("*-fold*.json"))]
    units = [u for u in units if u.get("done")]
    by = {(u["variant"], u["fold"]): u for u in units}
    folds = sorted({u["fold"] for u in units})
    rows, dense = [], {}
    for u in units:
        for removed, r in u["rows"].items():
            if removed == "0":
                dense[u["fold"]] = r
                continue
            rows.append({"method": u["variant"], "fold": u["fold"], "removed": int(removed),
                         "count": COUNTS[sorted(int(x) for x in u["rows"] if x != "0").index(int(removed))],
                         "top1": r["top1"], "loss": r["loss"], "seconds": u["seconds"]})
    variants = [v for v in VARIANTS if any(k[0] == v for k in by)]
    summary = {}
    for v in variants:
        # A variant is summarised over the folds on which magnitude ran too (the pairing needs both).
        mine = [f for f in folds if (v, f) in by and ("magnitude", f) in by]
        for i, count in enumerate(COUNTS):
            correct, losses, mag, dcor, top1s = [], [], [], [], []
            for f in mine:
                keys = sorted((int(x) for x in by[v, f]["rows"] if x != "0"))
                if i >= len(keys):
                    continue
                r = by[v, f]["rows"][str(keys[i])]
                mk = sorted(int(x) for x in by["magnitude", f]["rows"] if x != "0")[i]
                correct += r["correct"]
                losses += r["losses"]
                mag += by["magnitude", f]["rows"][str(mk)]["correct"]
                dcor += dense[f]["correct"]
                top1s.append(r["top1"])
            if not correct:
                continue
            n = len(correct)
            t = 100 * sum(correct) / n
            dm, dse = paired(correct, mag)
            dd, dds = paired(correct, dcor)
            summary.setdefault(v, {})[count] = {
                "folds": len(top1s), "images": n, "top1": t, "top1_se": math.sqrt(t * (100 - t) / n),
                "loss": sum(losses) / n, "fold_top1": top1s,
                "fold_spread": (max(top1s) - min(top1s)) if len(top1s) > 1 else 0.0,
                "vs_magnitude": dm, "vs_magnitude_se": dse, "vs_dense": dd, "vs_dense_se": dds}
    dc = [c for f in folds if f in dense for c in dense[f]["correct"]]
    dl = [x for f in folds if f in dense for x in dense[f]["losses"]]
    dense_all = {"top1": 100 * sum(dc) / len(dc), "loss": sum(dl) / len(dl), "images": len(dc),
                 "folds": {f: {"top1": dense[f]["top1"], "loss": dense[f]["loss"]} for f in sorted(dense)}}
    RESULTS.write_text(json.dumps({
        "provenance": provenance(), "setup": {**BASE, "counts": COUNTS, "folds": FOLDS, "fold_seed": FOLD_SEED,
                                              "data": "imagenet-sample, fold k scored, the other 800 calibrate"},
        "variants": VARIANTS, "default": "learned", "dense": dense_all, "summary": summary,
        # Each (variant, fold) records the commit and date it ran at; the report's own are above.
        "measured": {f"{u['variant']} fold {u['fold']}": {k: u["provenance"][k] for k in ("commit", "date", "threads")}
                     for u in units},
        "rows": sorted(rows, key=lambda r: (r["method"], r["fold"], r["removed"]))}, indent=1))
    print(markdown(summary, dense_all))
    print(f"dense {dense_all['top1']:.2f} / {dense_all['loss']:.3f} on {dense_all['images']} images")
    print("variant        count  folds  top1 (SE)       loss    vs magnitude (paired SE)  vs dense (paired SE)")
    for v, per in summary.items():
        for count, r in per.items():
            print(f"{v:14s} {count:>5s}  {r['folds']:5d}  {r['top1']:6.2f} ({r['top1_se']:.2f})  {r['loss']:.3f}   "
                  f"{r['vs_magnitude']:+6.2f} ({r['vs_magnitude_se']:.2f})          "
                  f"{r['vs_dense']:+6.2f} ({r['vs_dense_se']:.2f})")


def markdown(summary: dict, dense: dict) -> str:
    """The README's table: per count, top-1 / loss over the folds, and the paired difference against
    magnitude on the same images with its standard error."""
    lines = ["| method (folds) | " + " | ".join(COUNTS) + " |", "|---" * (len(COUNTS) + 1) + "|"]
    for v, per in summary.items():
        folds = max(r["folds"] for r in per.values())
        cells = [f"{r['top1']:.2f} / {r['loss']:.3f} ({r['vs_magnitude']:+.2f} ± {r['vs_magnitude_se']:.2f})"
                 if v != "magnitude" else f"{r['top1']:.2f} / {r['loss']:.3f}" for r in per.values()]
        lines.append(f"| {v} ({folds}) | " + " | ".join(cells) + " |")
    lines.append(f"\nDense: {dense['top1']:.2f}% / {dense['loss']:.3f} on {dense['images']:,} images.")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="learned,magnitude,wanda")
    ap.add_argument("--folds", default=",".join(map(str, range(FOLDS))))
    ap.add_argument("--report", action="store_true", help="Join the finished units into the results file.")
    args = ap.parse_args()
    if args.report:
        return report()
    WORK.mkdir(parents=True, exist_ok=True)
    # Fold by fold, so that a session that stops early leaves complete folds of every variant.
    for k in map(int, args.folds.split(",")):
        for v in args.variants.split(","):
            run_unit(v, k)


if __name__ == "__main__":
    main()
