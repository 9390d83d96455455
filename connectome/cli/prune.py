"""`connectome prune` and `connectome verify`: flags generated from PruneSettings, work done by the
library (connectome.pruning.prune); this module only reads the command line and prints."""

import shlex
import sys
from pathlib import Path

import click

from connectome.cli.options import build_settings, settings_options
from connectome.errors import ConnectomeError
from connectome.pruning.settings import PruneSettings


@click.command()
@settings_options(PruneSettings)
@click.option("--recipe", default=None, help="A recipe (file or name in recipes/); flags override it.")
@click.option("--job", type=click.Path(dir_okay=False), default=None,
              help="Settings as a JSON object (what `connectome serve` stores); flags override it.")
@click.option("--out", type=click.Path(), default=None, help="Run folder (default: runs/<model>-<settings hash>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last step.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def prune(recipe, job, out, resume, quiet, **params):
    """Zero weights of a pretrained MODEL; write model, mask, curve and manifest to a run folder."""
    from connectome.pruning.api import prune as run_prune

    if recipe and job:
        raise ConnectomeError("--recipe and --job both give the settings: pass one")
    s = build_settings(PruneSettings, params, recipe=recipe, job=job)

    def started(setup, run):
        click.echo(f"{s.model}: removing {setup.target:,} of {run.prunable:,} prunable weights "
                   f"({100 * setup.target / run.prunable:.1f}%) with {s.criterion}; run folder {run.out}", err=True)

    manifest = run_prune(s, Path(out) if out else None, resume=resume, progress=not quiet,
                         command=shlex.join(["connectome", *sys.argv[1:]]), on_start=started,
                         on_wait=lambda: click.echo(f"waiting for the process that holds {out}", err=True))
    if manifest is None:  # a torchrun rank other than 0: it computed, rank 0 wrote
        return
    r = manifest["result"]
    d, f = r["dense"], r["final"]
    folder = out or s.default_out()
    click.echo(f"removed {r['removed']:,} weights in {r['accepted_steps']} steps ({r['seconds']:.0f} s)\n"
               f"  dense : top-1 {d['top1']:.2f}%  top-5 {d['top5']:.2f}%  loss {d['loss']:.4f}\n"
               f"  pruned: top-1 {f['top1']:.2f}%  top-5 {f['top5']:.2f}%  loss {f['loss']:.4f}\n"
               f"  {folder}/model.safetensors, mask.safetensors, curve.csv, curve.png, manifest.json")


@click.command()
@click.argument("path", type=click.Path())
@click.option("--base", default=None, help="Base model spec (default: the one recorded in the file).")
@click.option("--weights", default=None)
@click.option("--weights-file", type=click.Path(), default=None, help="Base weights file.")
def verify(path, base, weights, weights_file):
    """Check that every weight of PATH (a run folder or a .safetensors file) equals the base or zero."""
    from connectome.io import check_invariant, read_metadata
    from connectome.models.load import load_model, read_state_file, state_sha256

    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise ConnectomeError(f"{file} does not exist")
    meta = read_metadata(file) if file.suffix == ".safetensors" else {}
    base = base or meta.get("base_model")
    if not base:
        raise ConnectomeError(f"{file} names no base model: pass --base MODEL")
    loaded = load_model(base, weights=weights, weights_file=weights_file)
    base_state = {k: v.detach().cpu() for k, v in loaded.module.state_dict().items()}
    if meta.get("base_sha256") and meta["base_sha256"] != state_sha256(base_state):
        click.echo(f"warning: the base weights differ from those recorded in {file} (sha256)", err=True)
    report = check_invariant(read_state_file(file), base_state)
    click.echo(f"{file}: {report.values:,} values in {report.tensors} tensors; zeroed {report.zeroed:,}; "
               f"zero in base {report.zero_in_base:,}; changed {report.violations:,}")
    if not report.ok:
        click.echo(f"FAIL: {report.first_violation}", err=True)
        sys.exit(1)
    click.echo("OK: every weight equals its base value or zero")
