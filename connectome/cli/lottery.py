"""`connectome lottery`: the lottery-ticket experiment from a recipe, with overrides; its CSV and figure."""

from pathlib import Path

import click

from connectome.io import write_text
from connectome.errors import ConnectomeError
from connectome.lottery.experiment import SETTING_NAMES, LotterySettings


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _levels(text: str) -> list[int]:
    try:
        return [int(t) for t in _names(text)]
    except ValueError:
        raise ConnectomeError(f"--control-levels wants comma-separated integers, got {text!r}") from None


def settings_from(recipe: str, overrides: dict) -> LotterySettings:
    """Recipe values, then the options given on the command line (None = not given)."""
    from connectome.recipes import load_recipe

    values = load_recipe(recipe, "lottery", SETTING_NAMES)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not values.get("model"):
        raise ConnectomeError(f"recipe {recipe} names no model")
    for key in ("controls", "control_levels"):
        if isinstance(values.get(key), str):
            values[key] = _names(values[key]) if key == "controls" else _levels(values[key])
    try:
        return LotterySettings(**values)
    except TypeError as e:
        raise ConnectomeError(f"bad recipe values: {e}") from None


# --- outputs -------------------------------------------------------------------------------------

COLUMNS = ["level", "arm", "percent_remaining", "kept", "early_stop_iter", "early_stop_val_loss",
           "early_stop_test_acc", "final_test_acc", "seconds"]


def write_csv(path: Path, rows: list[dict]) -> None:
    lines = [",".join(COLUMNS)]
    for r in rows:
        lines.append(",".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS))
    write_text(path, "\n".join(lines) + "\n")


def plot(path: Path, rows: list[dict], title: str) -> None:
    """The paper's Figure 4a/b: early-stop iteration, test accuracy there and at the end, against the
    percent of weights remaining on a log axis that runs from dense to sparse."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from connectome.io import atomic_path

    dense = next((r for r in rows if r["level"] == 0 and r["arm"] == "ticket"), None)
    panels = (("early_stop_iter", "early-stop iteration"), ("early_stop_test_acc", "test accuracy at early stop (%)"),
              ("final_test_acc", "test accuracy at the end (%)"))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    arms = ["ticket"] + sorted({r["arm"] for r in rows} - {"ticket"})
    styles = {"ticket": ("C0", "o-", "winning ticket"), "random_reinit": ("C1", "s--", "random reinit"),
              "random_prune": ("C2", "^--", "random pruning")}
    for ax, (key, label) in zip(axes, panels):
        for arm in arms:
            pts = sorted((r for r in rows if r["arm"] == arm), key=lambda r: -r["percent_remaining"])
            if arm != "ticket" and dense is not None:
                pts = [dense] + pts  # every control starts from the same dense network
            color, style, name = styles.get(arm, ("C3", "d--", arm))
            ax.plot([r["percent_remaining"] for r in pts], [r[key] for r in pts], style, color=color, ms=4, label=name)
        if dense is not None and key != "early_stop_iter":
            ax.axhline(dense[key], color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.invert_xaxis()
        lowest = min(r["percent_remaining"] for r in rows)
        ax.set_xticks([t for t in (100, 50, 30, 20, 10, 5, 3, 2, 1, 0.5, 0.2, 0.1) if t >= lowest * 0.9])
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("percent of weights remaining")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_outputs(run, rows: list[dict]) -> None:
    s = run.s
    write_csv(run.out / "lottery.csv", rows)
    title = (f"{s.model} on {run.data_name}: {s.strategy} magnitude pruning, Adam {s.lr:g}, {s.iterations:,} iterations"
             f"{f', rewind to {s.rewind_iter}' if s.rewind_iter else ''}")
    plot(run.out / "lottery.png", rows, title)


@click.command()
@click.argument("recipe")
@click.option("--data", default=None, help="Data spec, e.g. fashion-mnist or cifar10:/path (default: the recipe's).")
@click.option("--levels", type=int, default=None, help="Pruning levels after the dense training.")
@click.option("--global", "global_", is_flag=True, help="Prune by magnitude across all layers at --global-rate.")
@click.option("--global-rate", type=float, default=None, help="Fraction of all surviving weights removed per level.")
@click.option("--conv-rate", type=float, default=None, help="Fraction of surviving conv weights removed per level.")
@click.option("--fc-rate", type=float, default=None, help="Same, hidden fully connected layers.")
@click.option("--output-rate", type=float, default=None, help="Same, the output layer.")
@click.option("--rewind-iter", type=int, default=None, help="Reset survivors to iteration k of the dense training (0: the initialisation).")
@click.option("--controls", default=None, help="Comma-separated: random_reinit,random_prune.")
@click.option("--control-levels", default=None, help="Comma-separated levels that get the controls (default: all pruned levels).")
@click.option("--iterations", type=int, default=None, help="Training iterations per level.")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Adam learning rate.")
@click.option("--eval-every", type=int, default=None, help="Iterations between validation evaluations.")
@click.option("--val-samples", type=int, default=None, help="Validation examples held out of the training split.")
@click.option("--train-samples", type=int, default=None, help="Training examples (default: the rest of the split).")
@click.option("--test-samples", type=int, default=None, help="Test examples (default: the whole split).")
@click.option("--seed", type=int, default=None)
@click.option("--checkpoint-every", type=int, default=None, help="Iterations between saves of the training state.")
@click.option("--out", type=click.Path(), default=None, help="Run folder (default: runs/lottery-<settings hash>).")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=0, help="torch threads (0: torch's default).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def lottery(recipe, global_, out, device, threads, quiet, **overrides):
    """Find winning tickets (Frankle & Carbin 2019): train, prune, rewind, retrain, for RECIPE's levels."""
    import torch

    from connectome.device import resolve_device as _device
    from connectome.lottery.experiment import Lottery

    if global_:
        overrides["strategy"] = "global"
    s = settings_from(recipe, overrides)
    if threads:
        torch.set_num_threads(threads)
    run = Lottery(s, out, _device(device), progress=not quiet)
    click.echo(f"{s.model} on {run.data_name}: {s.levels} levels, controls {', '.join(s.controls) or 'none'}; "
               f"run folder {run.out}", err=True)
    rows = run.run()
    write_outputs(run, rows)
    click.echo(f"{'level':>5} {'arm':>14} {'remaining':>10} {'early stop':>10} {'test@es':>8} {'test@end':>8}")
    for r in rows:
        click.echo(f"{r['level']:5d} {r['arm']:>14} {r['percent_remaining']:9.2f}% {r['early_stop_iter']:10d} "
                   f"{r['early_stop_test_acc']:7.2f}% {r['final_test_acc']:7.2f}%")
    click.echo(f"{Path(run.out) / 'lottery.csv'}, lottery.png, levels/<L>/mask.safetensors, model.safetensors")
