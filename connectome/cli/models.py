"""`connectome models`: the models that can be named, each source's section in turn."""

import click


@click.command()
@click.option("--timm", "show_all", is_flag=True, help="Also list every timm architecture.")
def models(show_all):
    """List the models that can be named."""
    from connectome.models import SOURCES

    click.echo("\n\n".join("\n".join(source.listing(full=show_all)) for source in SOURCES.values()))
