"""Step control and delete-and-restore, measured: the demo's run (LeNet-300-100 on Fashion-MNIST, 50%
removed, `recipes/prune-lenet_300_100.yaml`) under each variant of the step rule, several seeds.

Each run goes to the target and then through `--restore-cycles` swap steps; the loop evaluates the
step that reaches the target, so one run gives both the result without restore cycles (at the target)
and with them (at the end): the swaps start from exactly the mask a run without them ends with.

Per variant and seed: steps to the target, the share rejected, evaluation top-1 and loss at the target
and after the swaps, and the seconds each phase took.

    OMP_NUM_THREADS=1 python bench/step_control.py --variants ratio-only,headroom --seeds 0,1,2

Writes bench/results/step-control-lenet_300_100.json (provenance, every run) and prints a table.
Runs are resumable (runs/step-control/<variant>-seed<N>-r<cycles>), and a finished one is read back, not rerun.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance  # noqa: E402

from connectome.pruning.api import prune  # noqa: E402
from connectome.pruning.settings import PruneSettings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "prune-lenet_300_100.yaml"
VARIANTS = {  # each named by its rules, not by whichever is the default today
    "ratio-only": {"method": "greedy", "score": "connectome", "headroom": False},  # grow only while measured/predicted holds (the default until headroom)
    "headroom": {"method": "greedy", "score": "connectome", "headroom": True},  # the greedy loop's default
    "pace": {"method": "greedy", "score": "connectome", "headroom": True, "pace": True},  # also allow the measured cost per weight of the last kept steps
    "learned": {"method": "learned", "learn_epochs": 40},  # the learned mask, then the swaps from it
    "first-version": {"method": "greedy", "score": "connectome", "keep_descents": False, "unknown_last": False, "headroom": False},
}


def summarise(log: list[dict], target: int) -> dict:
    """The phase to the target and the swap phase, each with its steps, rejections and end point."""
    reach = next(i for i, r in enumerate(log) if r["accepted"] and r.get("removed", 0) >= target and r["phase"] != "dense")
    to_target, swaps = log[1:reach + 1], log[reach + 1:]
    at, end = log[reach], log[-1]

    def phase(rows):
        return {"steps": len(rows), "rejected": sum(not r["accepted"] for r in rows),
                "rejected_share": round(sum(not r["accepted"] for r in rows) / max(1, len(rows)), 3)}
    return {"to_target": {**phase(to_target), "top1": at.get("eval_top1"), "loss": at.get("eval_loss"),
                          "accept_loss": at.get("accept_loss"), "seconds": at["seconds"]},
            "swaps": {**phase(swaps), "cycles": sum(r["accepted"] for r in swaps), "top1": end.get("eval_top1"),
                      "loss": end.get("eval_loss"), "accept_loss": end.get("accept_loss"),
                      "seconds": round(end["seconds"] - at["seconds"], 1)},
            "dense": {"top1": log[0].get("eval_top1"), "loss": log[0].get("eval_loss")}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="ratio-only,headroom")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--restore-cycles", type=int, default=20)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "step-control"))
    args = ap.parse_args()
    import yaml
    recipe = {k: v for k, v in yaml.safe_load(RECIPE.read_text()).items() if k not in ("kind", "about")}
    out_file = ROOT / "bench" / "results" / "step-control-lenet_300_100.json"
    results = json.loads(out_file.read_text()) if out_file.exists() else {"runs": {}}
    results["provenance"] = provenance()
    for variant in args.variants.split(","):
        for seed in (int(t) for t in args.seeds.split(",")):
            s = PruneSettings.from_mapping({**recipe, **VARIANTS[variant], "seed": seed,
                                            "restore_cycles": args.restore_cycles}, f"{variant} seed {seed}")
            out = Path(args.runs) / f"{variant}-seed{seed}-r{args.restore_cycles}"
            if not (out / "manifest.json").exists():
                prune(s, out, resume=True, progress=False)
            log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
            target = json.loads((out / "manifest.json").read_text())["result"]["target"]
            key = f"{variant}/{seed}/r{args.restore_cycles}"
            results["runs"][key] = {"variant": variant, "seed": seed, "settings_digest": s.digest(),
                                                   "restore_cycles": args.restore_cycles, **summarise(log, target)}
            r = results["runs"][key]
            print(f"{variant:>14} seed {seed}: to target {r['to_target']['steps']} steps, "
                  f"{100 * r['to_target']['rejected_share']:.0f}% rejected, {r['to_target']['top1']:.2f}% / "
                  f"{r['to_target']['loss']:.4f} ({r['to_target']['seconds']:.0f} s); after {r['swaps']['cycles']} "
                  f"swaps {r['swaps']['top1']:.2f}% / {r['swaps']['loss']:.4f} ({r['swaps']['seconds']:.0f} s)",
                  flush=True)
            out_file.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
