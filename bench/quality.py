"""Quality benchmark: every method on one plot per model (`connectome compare`), with the wall time.

    OMP_NUM_THREADS=2 python bench/quality.py --models efficientnet_lite0
    python bench/quality.py --models lenet_300_100,mobilenet_v3_small_fmnist

efficientnet_lite0 is the real-world benchmark: an ImageNet-pretrained network on real ImageNet images
(Imagenette: calibration from its train/ split, evaluation on all 3,925 val/ images over the 1,000
ImageNet logits). The binomial standard error of top-1 there is about 0.7 points: differences inside
it are noise. Evaluation dominates the cost on a CPU (one pass over 3,925 images per point, method and
seed), so each method is evaluated only up to where it has collapsed (`limits`).

Writes bench/results/quality-<model>.json (commit, machine, date, wall time), -compare.png and -layers.png.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance  # noqa: E402

from connectome.pruning.compare import compare, summarise, table, write_outputs  # noqa: E402
from connectome.pruning.settings import CompareSettings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def imagenet_sample() -> str:
    """The data spec of ImageNet-wide calibration: shared/'s imagenet-sample (one image of each of the
    1,000 classes in train/, Imagenette's val/ beside it). Where the copy lost its val/ symlink, a folder
    of two links in data/ (ignored by git) stands in for it."""
    shared = ROOT.parent / "shared" / "data"
    if (shared / "imagenet-sample" / "val").is_dir():
        return "imagenet:../shared/data/imagenet-sample"
    local = ROOT / "data" / "imagenet-sample"
    local.mkdir(parents=True, exist_ok=True)
    for split, target in (("train", shared / "imagenet-sample" / "train"), ("val", shared / "imagenette" / "val")):
        if not (local / split).exists():
            (local / split).symlink_to(target.resolve())
    return "imagenet:data/imagenet-sample"


# Per model: compare settings, and per method the largest count it is evaluated at.
SETUPS = {
    # ImageNet-wide calibration scored on Imagenette val (bench/heldout.py decides the default):
    # calibration on all 1,000 ImageNet classes (800 decision, 200 acceptance images), evaluation on
    # Imagenette's 3,925 val images over the 1,000 logits (top1_present reports the 10-way top-1 beside it).
    "efficientnet_lite0-imagenet-sample": dict(
        settings=dict(model="efficientnet_lite0", data=imagenet_sample, remove="50%",
                      counts=["5%", "10%", "20%", "30%", "50%"], calib_samples=1000, accept_fraction=0.2,
                      batch_size=50, seeds=1, eval_every=10**6, cache_calib="data/decoded",
                      methods=["learned", "connectome", "magnitude", "wanda", "wanda_row", "taylor", "fisher",
                               "dloss", "random"]),
        limits={"connectome": "5%", "taylor": "10%", "fisher": "10%", "dloss": "10%", "wanda_row": "10%",
                "random": "5%"}),
    "efficientnet_lite0": dict(
        # eval_every (runtime: no decision changes) so that the loop is evaluated at the grid's counts only.
        settings=dict(data="imagenet:../shared/data/imagenette", remove="50%", counts=["10%", "20%", "30%", "50%"],
                      calib_samples=1000, accept_fraction=0.2, batch_size=50, seeds=1, eval_every=10**6,
                      methods=["connectome", "learned", "magnitude", "wanda", "wanda_row", "taylor", "fisher", "dloss",
                               "random"]),
        # Methods that collapse at 10% are not evaluated further.
        limits={"taylor": "10%", "fisher": "10%", "dloss": "10%", "wanda_row": "10%", "random": "10%"}),
    # The classifier kept whole: every method prunes the feature extractor only (the 990 classes absent from
    # Imagenette cannot be switched off by zeroing their classifier rows).
    "efficientnet_lite0-noclassifier": dict(
        settings=dict(model="efficientnet_lite0", data="imagenet:../shared/data/imagenette", exclude=["classifier.weight"],
                      remove="30%", counts=["10%", "20%", "30%"], calib_samples=1000, accept_fraction=0.2,
                      batch_size=50, seeds=1, eval_every=10**6, methods=["connectome", "learned", "wanda", "magnitude"])),
    "lenet_300_100": dict(settings=dict(remove="70%", points=14, seeds=3, calib_samples=10000, batch_size=250,
                                        methods=["connectome", "magnitude", "random", "taylor", "fisher", "dloss"])),
    # Lite0 at the full 2:4 pattern: one-shot methods (the loop and the learned mask cost hours on a CPU).
    "efficientnet_lite0-2of4": dict(
        settings=dict(model="efficientnet_lite0", data="imagenet:../shared/data/imagenette", pattern="2:4",
                      remove="50%", counts=["50%"], calib_samples=1000, accept_fraction=0.2, batch_size=50,
                      seeds=1, methods=["magnitude", "wanda", "fisher"])),
    # 2:4 patterns (--pattern): every criterion bounded to 2 of every 4 consecutive input weights.
    "lenet_300_100-2of4": dict(settings=dict(model="lenet_300_100", pattern="2:4", remove="50%",
                                             counts=["10%", "20%", "30%", "40%", "50%"], seeds=3,
                                             calib_samples=10000, batch_size=250,
                                             methods=["connectome", "magnitude", "wanda", "fisher", "taylor",
                                                      "learned"])),
    # Sized for 2 CPU cores (one stats pass of 2,000 images ~20 s); on a GPU raise every number.
    "mobilenet_v3_small_fmnist": dict(settings=dict(remove="40%", points=8, seeds=1, calib_samples=2500,
                                                    eval_samples=2000, batch_size=250,
                                                    methods=["connectome", "magnitude", "wanda", "random",
                                                             "taylor", "fisher", "dloss"])),
}


# What must match for rows of two runs to share a plot: the model, its data, the calibration draw and the
# evaluation images, the grid.
SAME = ("model", "data", "weights", "weights_file", "preprocess", "include", "exclude", "calib_samples",
        "accept_fraction", "eval_samples", "seeds", "counts", "points", "remove", "pattern", "label_smoothing")


def carry_over(path: Path, cs: CompareSettings, r: dict, out: Path) -> dict:
    """Rows of the methods not run now, from the earlier results file, into `r` (summary and plots
    rewritten); returns {method: commit that measured it}."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    mine, theirs = cs.to_dict(), old["settings"]
    differ = [k for k in SAME if mine.get(k) != theirs.get(k, mine.get(k))]
    if differ:
        raise SystemExit(f"--carry: {path.name} was measured with other {', '.join(differ)}")
    if abs(old["dense"]["loss"] - r["dense"]["loss"]) > 1e-6:
        raise SystemExit(f"--carry: {path.name} has another dense loss ({old['dense']['loss']} vs {r['dense']['loss']})")
    earlier = old.get("carried", {})
    rows = [row for row in old["rows"] if row["method"] not in cs.methods]
    carried = {m: earlier.get(m, old["provenance"]["commit"]) for m in dict.fromkeys(row["method"] for row in rows)}
    r["rows"] = r["rows"] + rows
    methods = list(cs.methods) + list(carried)
    r["summary"] = summarise(r["rows"], r["dense"], methods)
    layers = json.loads((out / "compare.json").read_text())["layers"]
    write_outputs(out, r["rows"], layers, r["dense"], r["summary"], cs, r["prunable"])
    return carried


def merge(model: str, cs: CompareSettings, results: Path) -> None:
    """The results file from the work folders of methods run side by side (`--methods A` and `--methods
    B,C` at once, each in its own folder): their rows, dense row and per-layer cuts in one file and one
    plot. Every folder must hold the same dense evaluation."""
    import csv

    folders = sorted(p for p in results.glob(f"quality-{model}-*") if (p / "compare.csv").is_file()
                     and (p / "compare.json").is_file())
    if not folders:
        raise SystemExit(f"--merge: no finished work folder quality-{model}-* in {results}")
    rows, layers, dense, start = [], {}, None, time.time()
    for folder in folders:
        part = json.loads((folder / "compare.json").read_text())
        if dense is not None and abs(part["dense"]["loss"] - dense["loss"]) > 1e-6:
            raise SystemExit(f"--merge: {folder.name} has another dense loss")
        dense = part["dense"]
        layers.update(part["layers"])
        with open(folder / "compare.csv") as f:
            rows += [{k: (v if k == "method" else int(v) if k in ("seed", "removed") else float(v))
                      for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summary = summarise(rows, dense, methods)
    prunable = json.loads((results / f"quality-{model}.json").read_text())["prunable"] \
        if (results / f"quality-{model}.json").exists() else None
    out = folders[0]
    write_outputs(out, rows, layers, dense, summary, cs, prunable)
    for png in ("compare.png", "layers.png"):
        shutil.copy(out / png, results / f"quality-{model}-{png}")
    (results / f"quality-{model}.json").write_text(json.dumps({
        "provenance": provenance(), "merged": [p.name for p in folders], "settings": cs.to_dict(),
        "default": default_method(), "prunable": prunable, "dense": dense, "summary": summary, "rows": rows},
        indent=2))
    print(f"{model}: merged {', '.join(p.name for p in folders)} ({time.time() - start:.0f} s)\n{table(summary, dense)}")


def default_method() -> str:
    """The method `prune` runs when none is named."""
    from connectome.pruning.settings import PruneSettings
    return next(f.default for f in PruneSettings.specs() if f.name == "method")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="lenet_300_100,mobilenet_v3_small_fmnist")
    ap.add_argument("--methods", default=None, help="Override the model's methods (comma-separated).")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="Override a setting (YAML value), e.g. headroom=true; the results are named with --tag.")
    ap.add_argument("--tag", default=None, help="Suffix of the result files when settings are overridden.")
    ap.add_argument("--carry", action="store_true",
                    help="Keep the rows of methods not run now from the existing results file (same data and grid), "
                         "each with the commit that measured it, so one plot shows every method.")
    ap.add_argument("--merge", action="store_true",
                    help="Write the results file from the work folders of methods run side by side, then stop.")
    args = ap.parse_args()
    import yaml
    overrides = {k.replace("-", "_"): yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if overrides and not args.tag:
        ap.error("--set needs --tag, so that the default's results are not overwritten")
    results = ROOT / "bench" / "results"
    for model in args.models.split(","):
        cfg = SETUPS[model]
        values = {"model": model, **cfg["settings"], "device": args.device}  # a variant names its model
        values = {k: v() if callable(v) else v for k, v in values.items()}
        if args.methods:
            values["methods"] = args.methods.split(",")
        values.update(overrides)
        cs = CompareSettings.from_mapping(values, f"bench setup {model}")
        model = f"{model}-{args.tag}" if args.tag else model  # the result files' name
        if args.merge:
            merge(model, cs, results)
            continue
        # The work folder (resumable run states) is the methods' own, so that two invocations on one model
        # (a slow method beside the others, --carry) never share or remove each other's runs.
        out = results / (f"quality-{model}" + (f"-{'+'.join(cs.methods)}" if args.methods else ""))
        start, origin = time.time(), provenance()  # the commit and date the run starts from
        r = compare(cs, out, progress=sys.stderr.isatty(), limits=cfg.get("limits"))
        seconds = round(time.time() - start, 1)
        carried = carry_over(results / f"quality-{model}.json", cs, r, out) if args.carry else {}
        print(f"{model} ({seconds:.0f} s)\n{table(r['summary'], r['dense'])}", flush=True)
        for png in ("compare.png", "layers.png"):
            shutil.copy(out / png, results / f"quality-{model}-{png}")
        (results / f"quality-{model}.json").write_text(json.dumps({
            "provenance": origin, "carried": carried, "settings": cs.to_dict(), "limits": cfg.get("limits", {}),
            "default": default_method(),
            "wall_seconds": seconds, "prunable": r["prunable"], "dense": r["dense"], "summary": r["summary"],
            "rows": r["rows"]}, indent=2))
        for log in sorted((out / "runs").glob("*/log.jsonl")):  # an iterative run's steps and checks are results
            shutil.copy(log, results / f"quality-{model}-{log.parent.name}-log.jsonl")
        shutil.rmtree(out / "runs", ignore_errors=True)  # resumable state, not results


if __name__ == "__main__":
    main()
