"""Methods side by side: the same pretrained model pruned by each to the same removal counts.

Each of `--methods` names a method and a score, and runs with the settings `prune` with them would
have (CompareSettings.run_settings: the same digest). One-shot
entries rank the weights once per seed, on statistics of the dense model that all of them share, and
are evaluated at every point of the grid. Iterative methods (greedy, learned) run in a folder per seed,
stopping at each grid point to be evaluated: their curve is recorded as it goes.
"""

import csv
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from connectome.device import resolve_device
from connectome.errors import ConnectomeError
from connectome.evaluate import evaluate
from connectome.io import write_text
from connectome.pruning import scores
from connectome.pruning.methods import one_shot as shot
from connectome.pruning.methods.base import schedule
from connectome.pruning.registry import METHODS
from connectome.pruning.settings import CompareSettings
from connectome.pruning.setup import Runtime, prepare
from connectome.sizes import parse_count


def _row(entry: str, seed: int, removed: int, m: dict) -> dict:
    return {"method": entry, "seed": seed, "removed": removed, "top1": m["top1"], "top5": m["top5"],
            "loss": m["loss"], **({"top1_present": m["top1_present"]} if m.get("top1_present") is not None else {})}


def one_shot(setup, entry: str, stats, counts: list[int], seed: int, rt: Runtime):
    """One ranking, cut and evaluated at every count of the grid: nested masks."""
    flat = setup.flat
    ordered = shot.order(setup, scores.of(setup.settings), stats, seed)
    rows = []
    for k in tqdm(counts, desc=f"{entry} seed {seed}", disable=not rt.progress, leave=False):
        shot.cut(flat, ordered, k)
        m = evaluate(setup.loaded.module, setup.evaluation, setup.settings.batch_size, setup.device,
                     autocast_dtype=rt.autocast_dtype, workers=rt.workers_for(setup.evaluation),
                     channels_last=rt.channels_last, classes=setup.present)
        rows.append(_row(entry, seed, k, m.as_dict()))
    per_layer = flat.to_mask().per_layer_removed_fraction()
    flat.reset()
    return rows, per_layer


def iterative(setup, entry: str, counts: list[int], seed: int, out: Path, rt: Runtime):
    """The method in its own folder, stopped at each count of the grid to be evaluated there; resumable
    per seed. `setup` holds the entry's own settings: its folder's digest is that of `prune` with them."""
    flat = setup.flat
    flat.reset()
    folder, quiet = out / "runs" / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', entry)}-seed{seed}", replace(rt, progress=False)
    run = METHODS[setup.settings.method].for_grid(setup, folder, counts, quiet)
    rows = []
    for k in tqdm(counts, desc=f"{entry} seed {seed}", disable=not rt.progress, leave=False):
        run.run(target=k)
        last = run.log[-1]
        rows.append(_row(entry, seed, flat.removed(), {key.removeprefix("eval_"): v for key, v in last.items()
                                                       if key.startswith("eval_")}))
    per_layer = flat.to_mask().per_layer_removed_fraction()
    flat.reset()
    return rows, per_layer


def compare(cs: CompareSettings, out: Path | None = None, progress: bool = True,
            limits: dict[str, str] | None = None) -> dict:
    """Every method of `cs` on every seed; writes compare.csv, compare.json, compare.png, layers.png.
    `limits` caps a method's counts, written as counts are ("10%"): a benchmark spends no evaluation
    where a method has collapsed. A folder of another compare's results is refused (its settings.json)."""
    out = Path(out) if out else cs.default_out()
    if out.exists() and not out.is_dir():
        raise ConnectomeError(f"--out {out} is a file, not a folder")
    device = resolve_device(cs.device)
    names = cs.methods
    rows, layers, dense, evaluation = [], {}, None, None
    for seed in range(cs.seed, cs.seed + cs.seeds):  # --seed 3 --seeds 2: seeds 3 and 4, beside a run of 0-2
        setup = prepare(cs.prune_settings(seed), device)  # every check before the first file is written
        if cs.cache_calib:  # image folders decoded once into uint8 tensors: calibration and evaluation
            from connectome.data.decoded import cache_calibration
            setup = cache_calibration(setup, cs.cache_calib, cs.workers, progress=progress)
        rt = Runtime.of(cs, device, progress, Runtime.convolutional(setup))
        if rt.channels_last:  # in place: the Parameters FlatWeights rewrites stay the same objects
            setup.loaded.module.to(memory_format=torch.channels_last)
        if evaluation is None:  # every seed and method is evaluated on seed 0's images: runs of others (--seed) add up
            if seed and cs.eval_samples:  # a subset drawn by seed 0, and the classes it holds
                zero = prepare(cs.prune_settings(0), device)
                setup = replace(setup, evaluation=zero.evaluation, present=zero.present)
            evaluation, present = setup.evaluation, setup.present
            d = evaluate(setup.loaded.module, evaluation, cs.batch_size, device, autocast_dtype=rt.autocast_dtype,
                         workers=rt.workers_for(evaluation), channels_last=rt.channels_last, classes=setup.present)
            dense = {"top1": d.top1, "top5": d.top5, "loss": d.loss, "samples": d.samples,
                     **({"top1_present": d.top1_present} if d.top1_present is not None else {})}
        setup = replace(setup, evaluation=evaluation, present=present)
        if cs.counts:  # a count above --remove is refused, not silently cut to it
            asked = {c: parse_count(c, setup.flat.prunable()) for c in cs.counts}
            over = [c for c, k in asked.items() if k > setup.target]
            if over:
                raise ConnectomeError(f"--counts {over[0]} ({asked[over[0]]:,}) is above --remove {cs.remove} "
                                      f"({setup.target:,}): the grid stops at --remove")
            counts = sorted(set(asked.values()))
        else:
            counts = schedule(setup.target, cs.points)
        if seed == cs.seed:  # every check passed, no result written: the same settings, or a one-line refusal
            cs.claim(out)
        entries = {e: cs.run_settings(e, seed) for e in names}
        ranking = [scores.REGISTRY[s.score] for s in entries.values() if not is_iterative(s.method)]
        needed, norms = shot.pass_needed(ranking, cs.unknown_last)
        # one pass shared by every one-shot entry
        stats = shot.statistics(setup, rt, norms) if needed else None
        for entry, settings in entries.items():
            limit = parse_count(limits[entry], setup.flat.prunable()) if entry in (limits or {}) else counts[-1]
            mine = [k for k in counts if k <= limit] or counts[:1]
            mine_setup = replace(setup, settings=settings)
            if is_iterative(settings.method):
                r, layer = iterative(mine_setup, entry, mine, seed, out, rt)
            else:
                r, layer = one_shot(mine_setup, entry, stats, mine, seed, rt)
            rows += r
            layers.setdefault(entry, layer)
    summary = summarise(rows, dense, names)
    write_outputs(out, rows, layers, dense, summary, cs, setup.flat.prunable())
    return {"dense": dense, "summary": summary, "rows": rows, "prunable": setup.flat.prunable()}


def is_iterative(method: str) -> bool:
    return METHODS[method].iterative


def values_by_count(rows, method: str, key: str = "top1") -> dict[int, list[float]]:
    """A method's values (one per seed) at each removal count, counts in increasing order."""
    by_k = {}
    for r in rows:
        if r["method"] == method:
            by_k.setdefault(r["removed"], []).append(r[key])
    return dict(sorted(by_k.items()))



def summarise(rows, dense, methods) -> dict:
    out = {}
    for m in methods:
        mean = {k: sum(v) / len(v) for k, v in values_by_count(rows, m).items()}
        within = lambda pts: max([k for k, a in mean.items() if a >= dense["top1"] - pts], default=0)
        best_k = max(mean, key=mean.get)
        out[m] = {"within_0.5": within(0.5), "within_1.0": within(1.0), "best_top1": mean[best_k],
                  "best_at": best_k, "final_top1": mean[max(mean)]}
    return out


def table(summary: dict, dense: dict) -> str:
    w = max([12, *map(len, summary)])  # the widest name: METHOD:SCORE names run long
    lines = [f"dense top-1 {dense['top1']:.2f}%",
             f"{'method':{w}s} {'removed within 0.5':>19s} {'within 1.0':>11s} {'best top-1':>11s} {'at':>9s} {'final':>7s}"]
    for m, s in summary.items():
        lines.append(f"{m:{w}s} {s['within_0.5']:>19,d} {s['within_1.0']:>11,d} {s['best_top1']:>10.2f}% "
                     f"{s['best_at']:>9,d} {s['final_top1']:>6.2f}%")
    return "\n".join(lines)


def write_outputs(out: Path, rows, layers, dense, summary, base: CompareSettings, prunable: int) -> None:
    from connectome.plots import figure, grid

    buf = io.StringIO()
    w = csv.DictWriter(buf, ["method", "seed", "removed", "top1", "top5", "loss"]
                       + (["top1_present"] if any("top1_present" in r for r in rows) else []))
    w.writeheader()
    w.writerows(rows)
    write_text(out / "compare.csv", buf.getvalue())
    write_text(out / "compare.json", json.dumps({"dense": dense, "summary": summary, "layers": layers}, indent=2))

    # Left: every method; right: zoomed on the dense accuracy, where the methods that matter differ.
    with figure(out / "compare.png", ncols=3, figsize=(18, 4.8)) as (fig, axes):
        _compare_panels(axes, rows, summary, dense, base, prunable, grid)
    names = list(next(iter(layers.values())))
    with figure(out / "layers.png", figsize=(max(8, len(names) * 0.25), 4.5)) as (fig, ax):
        _layer_bars(ax, layers, names, base)


def _compare_panels(axes, rows, summary, dense, base, prunable, grid) -> None:
    """Top-1 (all, and zoomed on dense) and loss. Bands: the spread over seeds where there are
    several; with one seed, top-1's binomial standard error on the evaluation images (a difference
    inside it is noise)."""
    n = dense.get("samples")
    for panel, ax in enumerate(axes):
        key = "loss" if panel == 2 else "top1"
        for i, m in enumerate(summary):
            by_k = values_by_count(rows, m, key)
            ks = list(by_k)
            x = [100 * k / prunable for k in ks]
            mean = [sum(by_k[k]) / len(by_k[k]) for k in ks]
            ax.plot(x, mean, "o-", ms=3, color=f"C{i}", label=m)
            if any(len(v) > 1 for v in by_k.values()):
                ax.fill_between(x, [min(by_k[k]) for k in ks], [max(by_k[k]) for k in ks], color=f"C{i}", alpha=0.2)
            elif key == "top1" and n:
                se = [100 * (a / 100 * (1 - a / 100) / n) ** 0.5 for a in mean]
                ax.fill_between(x, [a - e for a, e in zip(mean, se)], [a + e for a, e in zip(mean, se)],
                                color=f"C{i}", alpha=0.15)
        ax.axhline(dense[key], color="k", ls=":", lw=1, label=f"dense {dense[key]:.4g}")
        if panel == 1:
            ax.set_ylim(dense["top1"] - 4, dense["top1"] + 1.5)
            ax.set_title("zoom: within 4 points of dense", fontsize=10)
        elif panel == 2:  # down to the lowest loss any method reached, up to 1.5x dense
            lowest = min([r["loss"] for r in rows] + [dense["loss"]])
            ax.set_ylim(min(lowest * 0.98, dense["loss"] * 0.9), dense["loss"] * 1.5)
            ax.set_title("evaluation loss (zoomed: up to 1.5x dense)", fontsize=10)
        else:
            band = "spread over seeds" if len({r["seed"] for r in rows}) > 1 else "binomial standard error"
            ax.set_title(f"{base.model}: methods compared (band: {band})", fontsize=10)
            ax.legend(fontsize=8)
        ax.set_xlabel(f"% of {prunable:,} prunable weights removed")
        ax.set_ylabel("cross-entropy, evaluation split" if key == "loss" else "top-1 (%), evaluation split")
        grid(ax)


def _layer_bars(ax, layers, names, base) -> None:
    width = 0.8 / len(layers)
    for i, (m, frac) in enumerate(layers.items()):
        ax.bar([j + i * width for j in range(len(names))], [frac[n] for n in names], width, label=m, color=f"C{i}")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels([n.removesuffix(".weight") for n in names], rotation=90, fontsize=6)
    ax.set_ylabel("fraction removed at the final count")
    ax.set_title(f"{base.model}: where each method cuts", fontsize=10)
    ax.legend(fontsize=8)
