"""Benchmark: the lottery-ticket experiment at the paper's length, several seeds: LeNet-300-100 on
MNIST or Fashion-MNIST, Conv-2, Conv-4 and Conv-6 on CIFAR-10 (--recipe).

The recipe recipes/lottery-lenet300-mnist.yaml (Frankle & Carbin 2019: Adam 1.2e-3, batch 60, 50,000
iterations per level, 20% / 10% per level, early stopping on 5,000 held-out training images), both
controls, one thread per process.

Trainings run in phases, most informative first, so that a limited wall-clock budget still yields a
readable result: for each seed, tickets to level 18 (about 1.9% remaining) with both controls at the
levels the paper's claims are about (3, 7, 12, 15, 18: 51%, 21%, 7%, 3.6%, 1.9% remaining); then, for
the first seed, controls at every second level. Levels and controls do not enter a run folder's hash,
so every phase continues the same folder, and a killed benchmark resumes where it stopped. Two
processes of one thread each (`--seeds 0` and `--seeds 1,2`) use two cores better than one of two;
each rewrites bench/results/lottery-lenet300-<data>.{csv,png,json} from every seed's run folder after
every training, under a lock. Rows already in the results file whose run folder is gone (another
machine, a lost disk) are carried over with the commit that trained them, provided the settings match.

    nohup .venv/bin/python bench/lottery.py --data mnist:../shared/data/mnist --seeds 0 > bench/results/lottery-mnist-0.log 2>&1 &

The Conv networks (recipes/lottery-conv{2,4,6}-cifar10.yaml, 20,000-30,000 iterations per level) go
level by level the same way: each seed's tickets to about 3.6% remaining with both controls at the
claim levels, then every seed deeper (to about 1.9% for Conv-2). The same command continues a stopped
run (in another session, after a reboot) from the last saved training state:

    OMP_NUM_THREADS=1 nohup .venv/bin/python bench/lottery.py --recipe lottery-conv2-cifar10 --seeds 0 \
        --budget-min 100000 >> bench/results/lottery-conv2-cifar10.log 2>&1 &
"""

import argparse
import csv
import datetime
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectome.io import write_text  # noqa: E402
from connectome.lottery.experiment import Lottery  # noqa: E402
from connectome.lottery.report import COLUMNS, csv_text, plot  # noqa: E402
from connectome.lottery.settings import LotterySettings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TITLE = ("LeNet-300-100 on {data}, lottery tickets (Adam 1.2e-3, batch 60, {iterations:,} iterations/level, "
         "20%/10% per level; {seeds})")
CLAIM_LEVELS = [3, 7, 12, 15, 18]  # 51%, 21%, 7%, 3.6%, 1.9% remaining


@dataclass(frozen=True)
class Network:
    """What the benchmark does with one network: the levels whose controls the claims need, how deep
    every seed goes first, the extra table row, the figure's title, the default data."""
    key: str  # the results' file names: lottery-<key>-<data>
    claim_levels: list[int]  # the last one is the deepest any phase goes by default
    first_depth: int  # every seed reaches this level before any goes deeper
    table_levels: tuple[int, ...]  # rows of the README table beyond those with controls
    title: str
    data: str


CONV_TITLE = ("{label} on {data}, lottery tickets (Adam {lr:g}, batch 60, {iterations:,} iterations/level, "
              "conv {conv:.0%}, fc 20%, output 10% per level; {seeds})")
CIFAR_JPEG = "cifar10:../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz"
NETWORKS = {
    "lenet_300_100_mnist": Network("lenet300", CLAIM_LEVELS, 18, (0, 9), TITLE, "mnist:../shared/data/mnist"),
    # Layerwise rates put Conv-2 at 51.4, 21.2, 8.8, 3.7, 1.9%; Conv-4 at 53.5, 23.9, 9.2, 3.8%; Conv-6 at
    # 56.4, 26.6, 8.9, 3.6%. The table adds the levels nearest those the paper's text names (Section 3:
    # fastest at 8.8 / 9.2 / 15.1%, most accurate at 4.6 / 11.1 / 26.4%) and one near 13%.
    "conv2": Network("conv2", [3, 7, 11, 15, 18], 15, (0, 9, 14), CONV_TITLE, CIFAR_JPEG),
    "conv4": Network("conv4", [3, 7, 12, 17], 17, (0, 10, 11), CONV_TITLE, CIFAR_JPEG),
    "conv6": Network("conv6", [3, 7, 13, 18], 18, (0, 10, 11), CONV_TITLE, CIFAR_JPEG),
}
LABELS = {"conv2": "Conv-2", "conv4": "Conv-4", "conv6": "Conv-6"}


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


def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per (level, arm): the mean over the seeds that have it, with their spread and count."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["level"], r["arm"]), []).append(r)
    out = []
    for (level, arm), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "ticket", kv[0][1])):
        row = {"level": level, "arm": arm, "seeds": len(rs)}
        for k in ("percent_remaining", "kept", "early_stop_iter", "early_stop_val_loss", "early_stop_test_acc",
                  "final_test_acc", "seconds"):
            vals = [float(r[k]) for r in rs]
            m = sum(vals) / len(vals)
            row[k] = int(round(m)) if k in ("kept", "early_stop_iter") else m
            if k in ("early_stop_iter", "early_stop_test_acc", "final_test_acc"):
                row[k + "_min"], row[k + "_max"] = min(vals), max(vals)
                row[k + "_std"] = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else None
        out.append(row)
    return out


def summary(means: list[dict]) -> dict:
    """The paper's claims, read off the seed means: tickets stop earlier and test at least as well as
    dense; the controls do not."""
    dense = next(r for r in means if r["level"] == 0 and r["arm"] == "ticket")
    out = {"dense": {k: dense[k] for k in ("seeds", "early_stop_iter", "early_stop_test_acc", "early_stop_test_acc_std",
                                           "final_test_acc")}, "levels": []}
    for level in sorted({r["level"] for r in means if r["level"] > 0}):
        arms = {r["arm"]: r for r in means if r["level"] == level}
        entry = {"level": level, "percent_remaining": round(arms["ticket"]["percent_remaining"], 2) if "ticket" in arms else None}
        for arm, r in arms.items():
            entry[arm] = {k: r[k] for k in ("seeds", "early_stop_iter", "early_stop_test_acc", "early_stop_test_acc_std",
                                           "final_test_acc")}
            entry[arm]["at_least_dense_accuracy"] = r["early_stop_test_acc"] >= dense["early_stop_test_acc"]
            entry[arm]["earlier_than_dense"] = r["early_stop_iter"] < dense["early_stop_iter"]
        out["levels"].append(entry)
    return out


def markdown(means: list[dict], extra_levels: tuple[int, ...] = (0, 9)) -> str:
    """The README's table: per level with controls (and 13.5%, a level the paper names), each arm's
    early-stop iteration and test accuracy there, mean ± standard deviation over its seeds."""
    by = {(r["level"], r["arm"]): r for r in means}
    levels = sorted({lv for lv, arm in by if arm != "ticket"} | set(extra_levels))

    def cell(r):
        if r is None:
            return ""
        sd = lambda k: f" ± {r[k + '_std']:.2f}" if r.get(k + "_std") is not None else ""
        it = f"{r['early_stop_iter']:,}" + (f" ± {r['early_stop_iter_std']:,.0f}" if r.get("early_stop_iter_std") else "")
        return f"{it} / {r['early_stop_test_acc']:.2f}%{sd('early_stop_test_acc')} ({r['seeds']})"
    lines = ["| % remaining | ticket: early-stop iteration / test accuracy there (seeds) | random reinit | random prune |",
             "|---|---|---|---|"]
    for lv in levels:
        t = by.get((lv, "ticket"))
        if t is None:
            continue
        lines.append(f"| {t['percent_remaining']:.1f} | {cell(t)} | {cell(by.get((lv, 'random_reinit')))} | "
                     f"{cell(by.get((lv, 'random_prune')))} |")
    return "\n".join(lines)


def phases(seeds: list[int], extra: list[str], net: Network = NETWORKS["lenet_300_100_mnist"]) -> list[tuple[int, int, list[int]]]:
    """(seed, levels, control levels), most informative first: each seed's tickets with the claim levels'
    controls to the network's first depth, then every seed deeper to its last claim level, then the
    phases given as SEED:LEVELS:CONTROL,LEVELS (controls at every second level, say)."""
    claim = net.claim_levels
    out = [(seed, net.first_depth, [lv for lv in claim if lv <= net.first_depth]) for seed in seeds]
    if claim[-1] > net.first_depth:
        out += [(seed, claim[-1], claim) for seed in seeds]
    for spec in extra:
        seed, levels, controls = spec.split(":")
        levels = int(levels)
        out.append((int(seed), levels, sorted({int(t) for t in controls.split(",") if t.strip()} |
                                              {lv for lv in claim if lv <= levels})))
    return out


def in_progress(run: Lottery) -> str | None:
    """The training a run folder holds a saved state of: which, how far, its validation so far."""
    from connectome.io import read_metadata

    path = run.out / "checkpoint.safetensors"
    if not path.exists():
        return None
    meta = read_metadata(path)
    (level, arm), state = json.loads(meta["job"]), json.loads(meta["run"])
    line = (f"level {level} {arm}: iteration {state['iteration']:,} of {run.s.iterations:,} saved after "
            f"{state['elapsed'] / 3600:.2f} h")
    if state["evals"]:
        it, loss, top1 = state["evals"][-1]
        best = state["best"]
        line += (f"; validation {top1:.2f}% (loss {loss:.4f}) at {it:,}, lowest loss {best[1]:.4f} "
                 f"({best[2]:.2f}%) at {best[0]:,}")
    return line


def carried_over(path: Path, settings: dict) -> list[dict]:
    """The rows of an earlier results file with the same settings (the seed aside), each with the commit
    that trained it."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    same = {k: v for k, v in old.get("settings", {}).items() if k != "seed"} == \
        {k: v for k, v in settings.items() if k != "seed"}
    if not same:
        return []
    # A row carried over once already keeps the commit that trained it.
    return [{**r, "trained_at": r.get("trained_at") or old.get("git_commit")} for r in old.get("rows", [])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="lottery-lenet300-mnist",
                    help="A lottery recipe (a name in recipes/ or a path): lottery-conv2-cifar10, ...")
    ap.add_argument("--data", default=None, help="Data spec (default: the shared copy of the recipe's data: "
                                                 "mnist:PATH, cifar10:PATH.tar.gz; fashion-mnist).")
    ap.add_argument("--seeds", default="0", help="Comma-separated seeds this process trains.")
    ap.add_argument("--all-seeds", default="0,1,2", help="Seeds whose run folders the results gather.")
    ap.add_argument("--extra", action="append", default=[], metavar="SEED:LEVELS:CONTROLS",
                    help="A further phase after the seeds' own, e.g. 1:18:2,4,6,8 (repeatable).")
    ap.add_argument("--budget-min", type=float, default=600, help="Start no training expected to end after this.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=None, help="Override the paper's length (smoke tests only).")
    ap.add_argument("--depth", type=int, default=None, help="Stop every phase at this level (smoke tests only).")
    ap.add_argument("--results", default=str(RESULTS), help="Folder of the results files.")
    ap.add_argument("--status", action="store_true", help="Only say what each seed's run folder holds.")
    ap.add_argument("--replot", action="store_true", help="Only rewrite the results from the run folders.")
    ap.add_argument("--table", action="store_true", help="Print the README's table from the results file.")
    args = ap.parse_args()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    recipe = args.recipe if args.recipe.endswith(".yaml") else str(ROOT / "recipes" / f"{args.recipe}.yaml")
    net = NETWORKS[LotterySettings.from_recipe(recipe).model]
    data = args.data or net.data
    if args.table:
        name = f"lottery-{net.key}-{data.split(':')[0]}"
        print(markdown(json.loads((results / f"{name}.json").read_text())["means"], net.table_levels))
        return
    torch.set_num_threads(args.threads)
    start, started_at = time.time(), datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    # On the CPU whatever the machine has: the benchmark measures the one-thread-per-process setup.
    overrides = {"data": data, "controls": ["random_reinit", "random_prune"], "device": "cpu"}
    if args.iterations:
        overrides["iterations"] = args.iterations
    base = LotterySettings.from_recipe(recipe, overrides)
    seeds = [int(t) for t in args.seeds.split(",") if t.strip()]
    all_seeds = sorted(set(seeds) | {int(t) for t in args.all_seeds.split(",") if t.strip()})
    data_name = base.data.split(":")[0]
    name = f"lottery-{net.key}-{data_name}"
    deepest = max([net.claim_levels[-1]] + [int(e.split(":")[1]) for e in args.extra])
    info = {"machine": machine(), "git_commit": git_commit(), "started": started_at}
    earlier = carried_over(results / f"{name}.json", base.hashed())
    timings: list[dict] = []
    stopped = None

    def gather() -> list[dict]:
        """Every finished training of every seed, read back from the run folders."""
        rows = []
        for seed in all_seeds:
            run = Lottery(replace(base, seed=seed, levels=deepest, control_levels=list(range(1, deepest + 1))),
                          progress=False)
            for level, arm in run.jobs():
                r = run.result(level, arm)
                if r is not None:
                    rows.append({**{k: v for k, v in r.items() if k not in ("evals", "layers")}, "seed": seed})
        have = {(r["seed"], r["level"], r["arm"]) for r in rows}
        carried = [r for r in earlier if (r["seed"], r["level"], r["arm"]) not in have]
        info["carried_over"] = ({"rows": len(carried), "seeds": sorted({r["seed"] for r in carried}),
                                 "trained_at": sorted({r["trained_at"] for r in carried})} if carried else None)
        return rows + carried

    def write_all():
        with open(results / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            rows = gather()
            means = mean_rows(rows)
            by_seed = sorted(rows, key=lambda r: (r["seed"], r["level"], r["arm"] != "ticket", r["arm"]))
            write_text(results / f"{name}.csv", csv_text(by_seed, ["seed"] + COLUMNS))
            done = sorted({r["seed"] for r in rows})
            shown = {"mnist": "MNIST", "cifar10": "CIFAR-10" + (" (JPEG copy)" if "jpeg" in base.data.lower() else "")}
            title = net.title.format(data=shown.get(data_name, data_name), iterations=base.iterations,
                                     seeds=f"mean of seeds {','.join(map(str, done))}, bars: min-max",
                                     label=LABELS.get(net.key, net.key), lr=base.lr, conv=base.conv_rate)
            plot(results / f"{name}.png", means, title)
            write_text(results / f"{name}.json", json.dumps({
                **info, "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "wall_seconds_this_invocation": round(time.time() - start, 1), "settings": base.hashed(),
                "seeds": done, "trainings_this_invocation": timings, "stopped": stopped,
                "summary": summary(means), "means": means, "rows": by_seed,
            }, indent=1))

    if args.status:
        for seed in all_seeds:
            run = Lottery(replace(base, seed=seed, levels=deepest, control_levels=list(range(1, deepest + 1))),
                          progress=False)
            done = [(lv, arm) for lv, arm in run.jobs() if run.result(lv, arm) is not None]
            print(f"seed {seed} ({run.out}): {len(done)} trainings finished"
                  + (f", the last level {done[-1][0]} {done[-1][1]}" if done else "")
                  + f"; {in_progress(run) or 'no training in progress'}")
        return
    if args.replot:
        write_all()
        return
    for seed, levels, control_levels in phases(seeds, args.extra, net):
        if args.depth is not None:
            levels, control_levels = min(levels, args.depth), [lv for lv in control_levels if lv <= args.depth]
        run = Lottery(replace(base, seed=seed, levels=levels, control_levels=control_levels), progress=False)
        for level, arm in run.jobs():
            if run.result(level, arm) is not None:
                continue
            mean = sum(t["seconds"] for t in timings) / len(timings) if timings else 0
            if time.time() - start + mean > 60 * args.budget_min:
                stopped = f"budget of {args.budget_min:g} min reached before seed {seed} level {level} {arm}"
                break
            t0 = time.time()
            row = run.train(level, arm)
            timings.append({"seed": seed, "level": level, "arm": arm, "seconds": round(time.time() - t0, 1)})
            print(f"{datetime.datetime.now():%H:%M:%S} seed {seed} level {level:2d} {arm:>13}: "
                  f"{row['percent_remaining']:6.2f}% early stop {row['early_stop_iter']:6d} "
                  f"test {row['early_stop_test_acc']:.2f}% end {row['final_test_acc']:.2f}% "
                  f"({timings[-1]['seconds']:.0f} s)", flush=True)
            write_all()
        if stopped:
            print(stopped, flush=True)
            break
    write_all()
    print(f"done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
