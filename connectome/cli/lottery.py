"""`connectome lottery`: flags generated from LotterySettings over a recipe; the library
(connectome.lottery) trains and writes the run folder, this module only reads the command line and
prints."""

import click

from connectome.cli.options import build_settings, settings_options
from connectome.errors import ConnectomeError
from connectome.io import check_folder
from connectome.lottery.settings import LotterySettings


def _levels(ctx, param, value: str | None) -> list[int] | None:
    # A list of integers: options.given() reads list flags as strings, so this one is parsed here.
    if value is None:
        return None
    try:
        return [int(t) for t in value.split(",") if t.strip()]
    except ValueError:
        raise ConnectomeError(f"--control-levels wants comma-separated integers, got {value!r}") from None


@click.command()
@click.argument("recipe")
@settings_options(LotterySettings, skip=("control_levels",))
@click.option("--control-levels", "control_levels", default=None, callback=_levels, metavar="LEVELS",
              help="Comma-separated levels that get the controls (default: every pruned level).")
@click.option("--global", "global_", is_flag=True, help="Prune by magnitude across all layers at --global-rate "
                                                          "(--strategy global).")
@click.option("--out", type=click.Path(), default=None, help="Run folder (default: runs/lottery-<settings hash>).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def lottery(recipe, control_levels, global_, out, quiet, **params):
    """Find winning tickets (Frankle & Carbin 2019): train, prune, rewind, retrain, for RECIPE's levels."""
    from connectome.lottery.experiment import Lottery

    if global_ and params.get("strategy") not in (None, "global"):
        raise ConnectomeError(f"--global and --strategy {params['strategy']} disagree: pass one")
    extra = {"strategy": "global"} if global_ else {}
    if control_levels is not None:
        extra["control_levels"] = control_levels
    s = build_settings(LotterySettings, params, recipe=recipe, extra=extra)
    check_folder(out or s.default_out())  # the library checks again where it writes; this is before any data loads
    run = Lottery(s, out, progress=not quiet)
    click.echo(f"{s.model} on {run.data_name} ({run.device}): {s.levels} levels, controls "
               f"{', '.join(s.controls) or 'none'}; run folder {run.out}", err=True)
    rows = run.run()
    click.echo(f"{'level':>5} {'arm':>14} {'remaining':>10} {'early stop':>10} {'test@es':>8} {'test@end':>8}")
    for r in rows:
        click.echo(f"{r['level']:5d} {r['arm']:>14} {r['percent_remaining']:9.2f}% {r['early_stop_iter']:10d} "
                   f"{r['early_stop_test_acc']:7.2f}% {r['final_test_acc']:7.2f}%")
    click.echo(f"{run.out / 'lottery.csv'}, lottery.png, levels/<L>/mask.safetensors, model.safetensors")
