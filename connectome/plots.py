"""Figures: the one way this project writes a PNG, and the little styling its figures share.

    with figure(path, ncols=2, figsize=(11, 4.2), title="...") as (fig, axes):
        axes[0].plot(...)

The figure renders with Agg, attached to the figure itself rather than chosen for the process:
pyplot's global backend switch would close the figures of whoever imported us (a notebook), and a
figure outside pyplot's registry is freed with its last reference, so none leaks when a block fails.
The PNG is written atomically on a clean exit (connectome.io.atomic_path): a reader sees the old
figure or the new one, never half a file; an exception inside the block writes nothing.
"""

import contextlib
from pathlib import Path

from connectome.io import atomic_path

DPI = 110


@contextlib.contextmanager
def figure(path: str | Path, nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8),
           title: str | None = None, dpi: int = DPI, **subplots):
    """Yield (figure, axes) as matplotlib's `subplots` makes them (one Axes, or an array of them);
    on exit lay it out, put `title` above it and write it to `path` as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, **subplots)
    yield fig, axes
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def grid(ax) -> None:
    """The light grid every figure of the project draws."""
    ax.grid(alpha=0.3, which="both")


PERCENT_TICKS = (100, 50, 30, 20, 10, 5, 3, 2, 1, 0.5, 0.2, 0.1)


def percent_remaining_axis(ax, lowest: float, label: str = "percent of weights remaining") -> None:
    """A log x axis of percents from dense (100, left) to sparse (right), ticked at round values down
    to `lowest`, the smallest percent plotted."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xticks([t for t in PERCENT_TICKS if t >= lowest * 0.9])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)
