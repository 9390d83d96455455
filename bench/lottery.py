"""Benchmark: the lottery-ticket experiment with LeNet-300-100 on Fashion-MNIST at the paper's length.

The recipe recipes/lottery-lenet300-mnist.yaml (Frankle & Carbin 2019: Adam 1.2e-3, batch 60, 50,000
iterations per level, 20% / 10% per level) with --data fashion-mnist, both controls, one thread.

Trainings run in phases, most informative first, so that a limited wall-clock budget still yields a
readable result: tickets to level 7 (about 21% remaining) with controls there, then tickets to level 12
(about 7%) with controls there, then controls at more levels. Levels and controls do not enter the run
folder's hash, so every phase continues the same folder, and a killed benchmark resumes where it
stopped. Writes bench/results/lottery-lenet300-fashion-mnist.{csv,png,json} after every training.

    nohup .venv/bin/python bench/lottery.py > bench/results/lottery-lenet300-fashion-mnist.log 2>&1 &
"""

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectome.checkpoint import write_text  # noqa: E402
from connectome.cli_lottery import plot, settings_from, write_csv  # noqa: E402
from connectome.lottery import Lottery  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NAME = "lottery-lenet300-fashion-mnist"
TITLE = ("LeNet-300-100 on Fashion-MNIST, lottery tickets (Adam 1.2e-3, batch 60, {iterations:,} iterations/level, "
         "20%/10% per level)")


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "connectome", "bench/lottery.py"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": os.getloadavg()}


def summary(rows: list[dict]) -> dict:
    """The paper's claims, read off the rows: tickets reach dense accuracy earlier; reinit falls below."""
    dense = next(r for r in rows if r["level"] == 0 and r["arm"] == "ticket")
    out = {"dense": {k: dense[k] for k in ("early_stop_iter", "early_stop_test_acc", "final_test_acc")}, "levels": []}
    for level in sorted({r["level"] for r in rows if r["level"] > 0}):
        arms = {r["arm"]: r for r in rows if r["level"] == level}
        entry = {"level": level, "percent_remaining": round(arms["ticket"]["percent_remaining"], 2) if "ticket" in arms else None}
        for arm, r in arms.items():
            entry[arm] = {"early_stop_iter": r["early_stop_iter"], "early_stop_test_acc": r["early_stop_test_acc"],
                          "final_test_acc": r["final_test_acc"],
                          "at_least_dense_accuracy": r["early_stop_test_acc"] >= dense["early_stop_test_acc"],
                          "earlier_than_dense": r["early_stop_iter"] < dense["early_stop_iter"], "seconds": r["seconds"]}
        out["levels"].append(entry)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-min", type=float, default=80, help="Start no training expected to end after this.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=None, help="Override the paper's 50,000 (smoke tests only).")
    ap.add_argument("--replot", action="store_true", help="Only redraw the PNG from the CSV.")
    args = ap.parse_args()
    if args.replot:
        rows = [{k: float(v) if k in ("percent_remaining", "early_stop_test_acc", "final_test_acc") else
                 v if k == "arm" else int(float(v)) for k, v in row.items()}
                for row in csv.DictReader(open(RESULTS / f"{NAME}.csv"))]
        plot(RESULTS / f"{NAME}.png", rows, TITLE.format(iterations=50000))
        return
    torch.set_num_threads(args.threads)
    start, started_at = time.time(), datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    overrides = {"data": "fashion-mnist", "controls": ["random_reinit", "random_prune"]}
    if args.iterations:
        overrides["iterations"] = args.iterations
    base = settings_from(str(ROOT / "recipes" / "lottery-lenet300-mnist.yaml"), overrides)
    phases = [(7, [7]), (12, [7, 12]), (12, [3, 7, 10, 12]), (12, [3, 5, 7, 9, 10, 11, 12]), (12, None)]
    info = {"machine": machine(), "git_commit": git_commit(), "started": started_at}
    rows: dict[tuple, dict] = {}
    timings: list[dict] = []
    stopped = None

    def write_all():
        ordered = sorted(rows.values(), key=lambda r: (r["level"], r["arm"] != "ticket", r["arm"]))
        write_csv(RESULTS / f"{NAME}.csv", ordered)
        plot(RESULTS / f"{NAME}.png", ordered, TITLE.format(iterations=base.iterations))
        write_text(RESULTS / f"{NAME}.json", json.dumps({
            **info, "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(time.time() - start, 1), "run_folder": str(run.out), "settings": base.hashed(),
            "settings_digest": base.digest(), "trainings_this_invocation": timings, "stopped": stopped,
            "summary": summary(ordered), "rows": [{k: v for k, v in r.items() if k != "evals"} for r in ordered],
        }, indent=1))

    for levels, control_levels in phases:
        run = Lottery(replace(base, levels=levels, control_levels=control_levels), progress=False)
        for level, arm in run.jobs():
            row = run.result(level, arm)
            if row is None:
                mean = sum(t["seconds"] for t in timings) / len(timings) if timings else 0
                if time.time() - start + mean > 60 * args.budget_min:
                    stopped = f"budget of {args.budget_min:g} min reached before level {level} {arm}"
                    break
                t0 = time.time()
                row = run.train(level, arm)
                timings.append({"level": level, "arm": arm, "seconds": round(time.time() - t0, 1)})
                print(f"{datetime.datetime.now():%H:%M:%S} level {level:2d} {arm:>13}: {row['percent_remaining']:6.2f}% "
                      f"early stop {row['early_stop_iter']:6d} test {row['early_stop_test_acc']:.2f}% "
                      f"end {row['final_test_acc']:.2f}% ({timings[-1]['seconds']:.0f} s)", flush=True)
            rows[(level, arm)] = row
            write_all()
        if stopped:
            print(stopped, flush=True)
            break
    write_all()
    print(f"done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
