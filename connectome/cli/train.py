"""`connectome train`: a reference model from its recipe (values checked by TrainRecipe, the same
settings code as every command's)."""

from pathlib import Path

import click

from connectome.device import resolve_device


@click.command()
@click.argument("recipe")
@click.option("--out", type=click.Path(), default="weights/reference", show_default=True)
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--device", default="auto", show_default=True)
def train(recipe, out, epochs, device):
    """Train a reference model from RECIPE (a file or a name in recipes/)."""
    from connectome.cli.options import build_settings
    from connectome.models.train import TrainRecipe, train as run_train

    settings = build_settings(TrainRecipe, {"epochs": epochs}, recipe=recipe)
    report = run_train(settings, Path(out), resolve_device(device))
    t = report["test"]
    click.echo(f"test top-1 {t['top1']:.2f}%  loss {t['loss']:.4f}  ({report['seconds']:.0f} s) -> {out}")
