"""`connectome models`: the models that can be named, source by source of the registry."""

import click


@click.command()
@click.option("--timm", "show_timm", is_flag=True, help="Also list every timm architecture.")
def models(show_timm):
    """List the models that can be named."""
    from connectome.models import SOURCES
    from connectome.models.reference import ARCHITECTURES
    from connectome.models.sources.torchvision import torchvision_names
    from torchvision.models import get_model_weights

    click.echo("Reference models of this project (weights in weights/reference/):")
    for name, arch in ARCHITECTURES.items():
        click.echo(f"  {name:28s} {arch.about} [{arch.dataset}]")
    click.echo(f"\nOffline ImageNet model:\n  efficientnet_lite0           {SOURCES['lite0'].about}")
    click.echo(f"\n{SOURCES['torchvision'].about}:")
    for name in torchvision_names():
        try:
            weights = ", ".join(m for m in get_model_weights(name).__members__ if m != "DEFAULT")
        except Exception:
            continue
        if "IMAGENET" in weights:
            click.echo(f"  {name:28s} {weights}")
    import timm
    names = timm.list_models(pretrained=True)
    click.echo(f"\ntimm: {len(names)} pretrained models, named timm:ARCH.TAG (e.g. timm:mobilenetv3_large_100.ra_in1k)")
    if show_timm:
        for name in names:
            click.echo(f"  timm:{name}")
    click.echo(f"\nYour own: {SOURCES['user'].about}; it may declare its preprocessing as timm's "
               f"pretrained_cfg (default: torchvision's ImageNet eval).")
