"""`connectome weights list|pull|publish`: published pruned weights (see connectome/weights.py)."""

import click

registry_option = click.option("--registry", default=None, metavar="URL_OR_PATH",
                               help="A registry file or http(s) URL (default: weights/registry.json).")


@click.group()
def weights():
    """Published pruned weights: list, download, publish."""


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"


@weights.command("list")
@registry_option
def list_(registry):
    """The published checkpoints: name, base, removed, sparsity, top-1, file sizes."""
    from connectome.weights import read_registry, summary

    entries, _ = read_registry(registry)
    if not entries:
        click.echo("no published weights")
        return
    rows = [("name", "base", "removed", "sparsity", "top-1", "size", "mask")]
    for w in (summary(name, e) for name, e in entries.items()):
        rows.append((w["name"], w["base"], f"{w['removed']:,}", f"{100 * w['sparsity']:.1f}%",
                     f"{w['top1']:.2f}% {w['dataset']}", _size(w["size"]), _size(w["mask_size"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())


@weights.command()
@click.argument("name")
@registry_option
@click.option("--mask", is_flag=True, help="Only the mask file (packed bits), to apply to the base weights.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pull(name, registry, mask, quiet):
    """Download NAME into torch's hub cache (once), verify its sha256, print its path."""
    from connectome.weights import pull as pull_file

    click.echo(pull_file(name, registry, mask=mask, progress=not quiet))


@weights.command()
@click.argument("run_dir", type=click.Path())
@click.option("--name", required=True, help="arch.tag, e.g. lenet_300_100.connectome_50pct_fmnist.")
@click.option("--url-base", default="", help="Where the files will be served (default: relative to the registry).")
@registry_option
@click.option("--license", "license_", default=None, help="Terms of the weights (default: the base weights').")
@click.option("--replace", is_flag=True, help="Replace an entry of the same name with other weights.")
def publish(run_dir, name, url_base, registry, license_, replace):
    """Add a run folder's pruned model and mask to a registry, as hash-named files beside it."""
    from pathlib import Path

    from connectome.weights import REGISTRY, publish as publish_run, summary

    e = publish_run(run_dir, name, url_base, registry, license_, replace)
    w = summary(name, e)
    folder = Path(registry or REGISTRY).parent
    click.echo(f"{name}: {w['removed']:,} of {e['prunable']:,} removed ({100 * w['sparsity']:.1f}%), "
               f"top-1 {w['top1']:.2f}% on {w['dataset']}\n  {folder / Path(w['url']).name} ({_size(w['size'])})\n"
               f"  {folder / Path(w['mask_url']).name} ({_size(w['mask_size'])})\n  metrics {e['meta']['_metrics_source']}")
