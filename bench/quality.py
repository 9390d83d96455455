"""Quality benchmark: `connectome compare` on every reference model.

    OMP_NUM_THREADS=1 python bench/quality.py [--models lenet_300_100,mobilenet_v3_small_fmnist]

Writes bench/results/quality-<model>.json (with the commit, machine and date) and the PNGs.
"""

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance  # noqa: E402

from connectome.pruning.compare import compare, table  # noqa: E402
from connectome.pruning.run import PruneSettings  # noqa: E402

# Per model: the largest count, grid points, seeds and data sizes. The evaluation split is the whole test set.
SETUPS = {
    "lenet_300_100": dict(remove="70%", points=14, seeds=3, calib_samples=10000, batch_size=250),
    # Sized for 2 CPU cores (one stats pass of 2,000 images ~20 s); on a GPU raise every number.
    "mobilenet_v3_small_fmnist": dict(remove="40%", points=8, seeds=1, calib_samples=2500, eval_samples=2000,
                                      batch_size=250),
}
METHODS = ["connectome", "magnitude", "random", "taylor", "fisher", "dloss"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(SETUPS))
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    results = Path(__file__).resolve().parent / "results"
    for model in args.models.split(","):
        cfg = dict(SETUPS[model])
        points, seeds = cfg.pop("points"), cfg.pop("seeds")
        settings = PruneSettings(model=model, **cfg)
        out = results / f"quality-{model}"
        start = time.time()
        r = compare(settings, args.methods.split(","), points, seeds, out, progress=False)
        print(f"{model}\n{table(r['summary'], r['dense'])}", flush=True)
        for png in ("compare.png", "layers.png"):
            shutil.copy(out / png, results / f"quality-{model}-{png}")
        (results / f"quality-{model}.json").write_text(json.dumps({
            "provenance": provenance(), "settings": asdict(settings), "points": points, "seeds": seeds,
            "methods": args.methods.split(","), "seconds": round(time.time() - start, 1),
            "dense": r["dense"], "summary": r["summary"], "rows": r["rows"]}, indent=2))
        shutil.rmtree(out / "runs", ignore_errors=True)  # resumable state, not results


if __name__ == "__main__":
    main()
