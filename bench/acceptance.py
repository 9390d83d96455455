"""The one-shot methods on the acceptance split, beside the learned mask's own acceptance record.

    OMP_NUM_THREADS=2 python bench/acceptance.py --model efficientnet_lite0-imagenet-sample

On the ImageNet-wide benchmark the evaluation images are Imagenette's ten classes (scored over all
1,000 logits); the acceptance split (200 calibration images of about 200 other classes, never trained
on by any method) is the only held-out view of the rest of ImageNet. Small (a binomial standard error
of about 2.3 points at 89%), but it tells whether a gain on the ten classes is paid for elsewhere.
The one-shot masks are computed as `compare` computes them (seed 0's statistics, the same grid); the
learned rows are read from the learned run's log.

Writes bench/results/acceptance-<model>.json with the commit, machine and date.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance  # noqa: E402
from quality import SETUPS  # noqa: E402

from connectome.evaluate import evaluate  # noqa: E402
from connectome.pruning import scores  # noqa: E402
from connectome.pruning.methods import one_shot as shot  # noqa: E402
from connectome.pruning.settings import CompareSettings  # noqa: E402
from connectome.pruning.setup import Runtime, prepare  # noqa: E402
from connectome.sizes import parse_count  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0-imagenet-sample")
    ap.add_argument("--methods", default="magnitude,wanda")
    ap.add_argument("--learned-log", default=None, help="The learned run's log.jsonl (default: in its work folder, "
                                                        "which bench/quality.py removes once it has finished).")
    ap.add_argument("--mask", action="append", default=[], metavar="NAME=FILE",
                    help="Also a saved mask (a run's mask.safetensors, or the state of a run stopped short), "
                         "measured on the acceptance split and on the evaluation split.")
    args = ap.parse_args()
    cfg = SETUPS[args.model]
    values = {"model": args.model, **cfg["settings"], "device": "cpu"}
    values = {k: v() if callable(v) else v for k, v in values.items()}
    cs = CompareSettings.from_mapping(values, f"bench setup {args.model}")
    setup = prepare(cs.prune_settings(0))
    if cs.cache_calib:
        from connectome.data.decoded import cache_calibration
        setup = cache_calibration(setup, cs.cache_calib, cs.workers, progress=False)
    rt = Runtime.of(cs, "cpu", False, Runtime.convolutional(setup))
    if rt.channels_last:
        setup.loaded.module.to(memory_format=torch.channels_last)
    flat = setup.flat
    counts = sorted({parse_count(c, flat.prunable()) for c in cs.counts})
    accept = lambda: evaluate(setup.loaded.module, setup.accept, cs.batch_size, channels_last=rt.channels_last)
    dense = accept()
    rows = [{"method": "dense", "removed": 0, "top1": dense.top1, "loss": dense.loss}]
    methods = args.methods.split(",")
    ranking = [scores.get(m) for m in methods]
    needed, norms = shot.pass_needed(ranking, cs.unknown_last)
    stats = shot.statistics(setup, rt, norms) if needed else None
    for method, score in zip(methods, ranking):
        ordered = shot.order(setup, score, stats, 0)
        for k in counts:
            shot.cut(flat, ordered, k)
            m = accept()
            rows.append({"method": method, "removed": k, "top1": m.top1, "loss": m.loss})
            print(method, k, f"{m.top1:.2f} {m.loss:.4f}", flush=True)
        flat.reset()
    for name, path in (m.split("=", 1) for m in args.mask):
        from connectome.pruning.mask import Mask
        flat.load_mask(Mask.load(Path(path)))
        flat.write()
        a = accept()
        e = evaluate(setup.loaded.module, setup.evaluation, cs.batch_size, channels_last=rt.channels_last,
                     classes=setup.present)
        rows.append({"method": name, "removed": flat.removed(), "top1": a.top1, "loss": a.loss,
                     "eval_top1": e.top1, "eval_loss": e.loss, "eval_top1_present": e.top1_present})
        print(name, rows[-1], flush=True)
        flat.reset()
    log = Path(args.learned_log) if args.learned_log else \
        ROOT / "bench" / "results" / f"quality-{args.model}-learned" / "runs" / "learned-seed0" / "log.jsonl"
    if log.exists():
        for line in log.read_text().splitlines()[1:]:
            r = json.loads(line)
            rows.append({"method": "learned", "removed": r["removed"], "top1": r["accept_top1"], "loss": r["accept_loss"]})
    out = ROOT / "bench" / "results" / f"acceptance-{args.model}.json"
    out.write_text(json.dumps({"provenance": provenance(), "samples": dense.samples, "prunable": flat.prunable(),
                               "rows": rows}, indent=2))
    for r in rows:
        print(f"{r['method']:10s} {100 * r['removed'] / flat.prunable():5.1f}%  {r['top1']:6.2f}  {r['loss']:.4f}")


if __name__ == "__main__":
    main()
