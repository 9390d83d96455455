"""The accuracy-vs-removed curve of a run: CSV for tools, PNG for people."""

import csv
import io
from pathlib import Path

from connectome.io import write_text

COLUMNS = ["step", "phase", "removed", "restored", "size", "predicted", "actual", "calib_loss", "calib_top1",
           "accept_loss", "accept_top1", "eval_top1", "eval_top5", "eval_loss", "seconds"]


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _num(v: str):
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def plot(path: Path, rows: list[dict], title: str, prunable: int) -> None:
    """Top-1 and loss against weights removed; the dense model's values as horizontal lines."""
    from connectome.plots import figure, grid

    ev = [r for r in rows if r.get("eval_top1") is not None]
    acc = [r for r in rows if r.get("accept_top1") is not None]
    with figure(path, ncols=2, figsize=(11, 4.2), title=title) as (fig, (ax1, ax2)):
        _panels(ax1, ax2, ev, acc, prunable, grid)


def _panels(ax1, ax2, ev, acc, prunable, grid) -> None:
    for ax, key, label in ((ax1, "top1", "top-1 (%)"), (ax2, "loss", "cross-entropy")):
        if ev:
            x = [r["removed"] / 1e3 for r in ev]
            ax.plot(x, [r[f"eval_{key}"] for r in ev], "o-", color="C0", ms=3, label="evaluation split")
            ax.axhline(ev[0][f"eval_{key}"], color="C0", ls=":", lw=1, label="dense (evaluation)")
        if acc:
            ax.plot([r["removed"] / 1e3 for r in acc], [r[f"accept_{key}"] for r in acc], "-", color="C1",
                    lw=1, alpha=0.8, label="held-out calibration (acceptance)")
        ax.set_xlabel(f"weights removed (thousands of {prunable / 1e3:,.0f}k prunable)")
        ax.set_ylabel(label)
        grid(ax)
        if prunable:
            sec = ax.secondary_xaxis("top", functions=(lambda k: 100 * k * 1e3 / prunable,
                                                       lambda p: p * prunable / 100 / 1e3))
            sec.set_xlabel("% of prunable weights")
    ax1.legend(fontsize=8, loc="lower left")
