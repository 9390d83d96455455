"""`connectome compare`: every method on one plot. Flags generated from CompareSettings."""

from pathlib import Path

import click

from connectome.cli.options import build_settings, settings_options
from connectome.io import claimed_folder
from connectome.pruning.settings import CompareSettings


@click.command()
@settings_options(CompareSettings)
@click.option("--recipe", default=None, help="A recipe of kind compare (file or name in recipes/); flags override it.")
@click.option("--out", type=click.Path(), default=None, help="Output folder (default: runs/compare-<model>-<hash>).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def compare(recipe, out, quiet, **params):
    """Prune MODEL with each method to the same counts; write compare.csv, compare.png and layers.png."""
    from connectome.pruning import compare as cmp

    s = build_settings(CompareSettings, params, recipe=recipe)
    out = Path(out) if out else s.default_out()
    for note in s.notes:
        click.echo(f"note: {note}", err=True)
    with claimed_folder(out):  # a folder of someone else's files is refused; ours is marked as such
        result = cmp.compare(s, out, progress=not quiet)
    click.echo(cmp.table(result["summary"], result["dense"]))
    click.echo(f"-> {out}/compare.csv, compare.png, layers.png")
