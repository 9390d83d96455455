"""`connectome compare`: every method on one plot."""

from pathlib import Path

import click

from connectome.errors import ConnectomeError


@click.command()
@click.argument("model")
@click.option("--remove", required=True, help="The largest count of the grid: 12345, 250k, 1M, 20%.")
@click.option("--data", default=None, help="Data spec (default: the reference model's own data).")
@click.option("--methods", default="connectome,magnitude,random,taylor,fisher", show_default=True)
@click.option("--points", type=int, default=20, show_default=True, help="Grid points up to --remove.")
@click.option("--seeds", type=int, default=3, show_default=True)
@click.option("--weights", default=None)
@click.option("--weights-file", type=click.Path(), default=None)
@click.option("--calib-samples", type=int, default=10000, show_default=True)
@click.option("--eval-samples", type=int, default=None)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--out", type=click.Path(), required=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", is_flag=True)
def compare(model, remove, data, methods, points, seeds, weights, weights_file, calib_samples, eval_samples,
            batch_size, out, device, quiet):
    """Prune MODEL with each method to the same counts; write compare.csv, compare.png and layers.png."""
    from connectome.pruning import compare as cmp
    from connectome.device import resolve_device as _device
    from connectome.pruning.run import PruneSettings

    if points < 1 or seeds < 1:
        raise ConnectomeError("--points and --seeds must be at least 1")
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not names:
        raise ConnectomeError("--methods names no method")
    settings = PruneSettings(model=model, remove=remove, data=data, weights=weights, weights_file=weights_file,
                             calib_samples=calib_samples, eval_samples=eval_samples, batch_size=batch_size)
    result = cmp.compare(settings, names, points, seeds, Path(out), _device(device), progress=not quiet)
    click.echo(cmp.table(result["summary"], result["dense"]))
    click.echo(f"-> {out}/compare.csv, compare.png, layers.png")
