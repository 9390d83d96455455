"""`connectome train`: a reference model from its recipe."""

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
    from connectome.recipes import load_recipe
    from connectome.models.train import RECIPE_KEYS, TrainRecipe, train as run_train

    values = load_recipe(recipe, "train")
    unknown = sorted(set(values) - RECIPE_KEYS)
    if unknown:
        from connectome.errors import ConnectomeError
        raise ConnectomeError(f"recipe {recipe}: unknown setting {', '.join(map(repr, unknown))}")
    if epochs is not None:
        values["epochs"] = epochs
    report = run_train(TrainRecipe(**values), Path(out), resolve_device(device))
    t = report["test"]
    click.echo(f"test top-1 {t['top1']:.2f}%  loss {t['loss']:.4f}  ({report['seconds']:.0f} s) -> {out}")
