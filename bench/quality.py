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

from connectome.pruning.compare import compare, table  # noqa: E402
from connectome.pruning.settings import CompareSettings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Per model: compare settings, and per method the largest count it is evaluated at.
SETUPS = {
    "efficientnet_lite0": dict(
        settings=dict(data="imagenet:../shared/data/imagenette", remove="50%", counts=["10%", "20%", "30%", "50%"],
                      calib_samples=1000, accept_fraction=0.2, batch_size=50, seeds=1,
                      methods=["connectome", "magnitude", "wanda", "wanda_row", "taylor", "fisher", "dloss", "random"]),
        # The loop (about 25 minutes per 10% on one core) to 10%: the same decisions as
        # `prune --recipe prune-efficientnet_lite0-imagenette`, whose result is in bench/results.
        limits={"connectome": "10%", "taylor": "10%", "fisher": "10%", "dloss": "10%", "wanda_row": "10%",
                "random": "10%"}),
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="lenet_300_100,mobilenet_v3_small_fmnist")
    ap.add_argument("--methods", default=None, help="Override the model's methods (comma-separated).")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="Override a setting (YAML value), e.g. headroom=true; the results are named with --tag.")
    ap.add_argument("--tag", default=None, help="Suffix of the result files when settings are overridden.")
    args = ap.parse_args()
    import yaml
    overrides = {k.replace("-", "_"): yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if overrides and not args.tag:
        ap.error("--set needs --tag, so that the default's results are not overwritten")
    results = ROOT / "bench" / "results"
    for model in args.models.split(","):
        cfg = SETUPS[model]
        values = {"model": model, **cfg["settings"], "device": args.device}  # a variant names its model
        if args.methods:
            values["methods"] = args.methods.split(",")
        values.update(overrides)
        cs = CompareSettings.from_mapping(values, f"bench setup {model}")
        model = f"{model}-{args.tag}" if args.tag else model  # the result files' name
        out = results / f"quality-{model}"
        start, origin = time.time(), provenance()  # the commit and date the run starts from
        r = compare(cs, out, progress=sys.stderr.isatty(), limits=cfg.get("limits"))
        seconds = round(time.time() - start, 1)
        print(f"{model} ({seconds:.0f} s)\n{table(r['summary'], r['dense'])}", flush=True)
        for png in ("compare.png", "layers.png"):
            shutil.copy(out / png, results / f"quality-{model}-{png}")
        (results / f"quality-{model}.json").write_text(json.dumps({
            "provenance": origin, "settings": cs.to_dict(), "limits": cfg.get("limits", {}),
            "wall_seconds": seconds, "prunable": r["prunable"], "dense": r["dense"], "summary": r["summary"],
            "rows": r["rows"]}, indent=2))
        shutil.rmtree(out / "runs", ignore_errors=True)  # resumable state, not results


if __name__ == "__main__":
    main()
