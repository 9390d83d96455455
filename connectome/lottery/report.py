"""What a lottery run shows: lottery.csv (one row per training) and the paper-style figure.

The rows are the trainings' results (connectome.lottery.experiment), or means over seeds that carry
`<key>_min`/`<key>_max` (or `<key>_std`) beside a value: the figure draws those as error bars.
"""

from pathlib import Path

from connectome.io import write_text
from connectome.plots import figure, grid, percent_remaining_axis

COLUMNS = ["level", "arm", "percent_remaining", "kept", "early_stop_iter", "early_stop_val_loss",
           "early_stop_test_acc", "final_test_acc", "seconds"]


def csv_text(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    lines = [",".join(columns)]
    for r in rows:
        lines.append(",".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in columns))
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> None:
    write_text(path, csv_text(rows, columns))


PANELS = (("early_stop_iter", "early-stop iteration"), ("early_stop_test_acc", "test accuracy at early stop (%)"),
          ("final_test_acc", "test accuracy at the end (%)"))
STYLES = {"ticket": ("C0", "o-", "winning ticket"), "random_reinit": ("C1", "s--", "random reinit"),
          "random_prune": ("C2", "^--", "random pruning")}


def spread(row: dict, key: str) -> tuple[float, float]:
    """How far below and above row[key] its seeds reach: min-max when the row has them, else one
    standard deviation, else nothing (a single run)."""
    lo, hi, std = row.get(f"{key}_min"), row.get(f"{key}_max"), row.get(f"{key}_std")
    if lo is not None and hi is not None:
        return max(0.0, row[key] - lo), max(0.0, hi - row[key])  # a rounded mean may lie just outside
    if std is not None:
        return std, std
    return 0.0, 0.0


def plot(path: Path, rows: list[dict], title: str) -> None:
    """The paper's Figure 4a/b: early-stop iteration, test accuracy there and at the end, against the
    percent of weights remaining on a log axis that runs from dense to sparse."""
    dense = next((r for r in rows if r["level"] == 0 and r["arm"] == "ticket"), None)
    arms = ["ticket"] + sorted({r["arm"] for r in rows} - {"ticket"})
    lowest = min(r["percent_remaining"] for r in rows)
    with figure(path, ncols=3, figsize=(14, 4.2), title=title) as (fig, axes):
        for ax, (key, label) in zip(axes, PANELS):
            for arm in arms:
                pts = sorted((r for r in rows if r["arm"] == arm), key=lambda r: -r["percent_remaining"])
                if arm != "ticket" and dense is not None:
                    pts = [dense] + pts  # every control starts from the same dense network
                color, style, name = STYLES.get(arm, ("C3", "d--", arm))
                x, y = [r["percent_remaining"] for r in pts], [r[key] for r in pts]
                bars = [spread(r, key) for r in pts]
                if any(lo or hi for lo, hi in bars):
                    ax.errorbar(x, y, yerr=[[b[0] for b in bars], [b[1] for b in bars]], fmt=style, color=color,
                                ms=4, capsize=2, elinewidth=0.8, label=name)
                else:
                    ax.plot(x, y, style, color=color, ms=4, label=name)
            if dense is not None and key != "early_stop_iter":
                ax.axhline(dense[key], color="grey", ls=":", lw=1)
            percent_remaining_axis(ax, lowest)
            ax.set_ylabel(label)
            grid(ax)
        axes[0].legend(fontsize=8)


def write_report(folder: Path, rows: list[dict], title: str) -> None:
    """lottery.csv and lottery.png in a run folder."""
    write_csv(Path(folder) / "lottery.csv", rows)
    plot(Path(folder) / "lottery.png", rows, title)
