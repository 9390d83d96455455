"""`connectome prune` and `connectome verify`: flags generated from PruneSettings, work done by the
library (connectome.pruning.prune); this module only reads the command line and prints."""

import json
import shlex
import sys
from pathlib import Path

import click

from connectome.cli.options import build_settings, settings_options
from connectome.errors import ConnectomeError
from connectome.io import check_folder
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
    check_folder(Path(out) if out else s.default_out())  # before the model and data load: nothing to undo
    for note in s.notes:
        click.echo(f"note: {note}", err=True)

    def started(setup, run):
        click.echo(f"{s.model}: removing {setup.target:,} of {run.prunable:,} prunable weights "
                   f"({100 * setup.target / run.prunable:.1f}%) with {s.label()}; run folder {run.out}", err=True)

    manifest = run_prune(s, Path(out) if out else None, resume=resume, progress=not quiet,
                         command=shlex.join(["connectome", *sys.argv[1:]]), on_start=started,
                         on_wait=lambda: click.echo(f"waiting for the process that holds {out}", err=True))
    if manifest is None:  # a torchrun rank other than 0: it computed, rank 0 wrote
        return
    r = manifest["result"]
    d, f = r["dense"], r["final"]
    folder = out or s.default_out()
    unit = s.methods_run()[-1].unit  # what the method that ran last records: steps or counts
    click.echo(f"removed {r['removed']:,} weights in {r['accepted_steps']} {unit} ({r['seconds']:.0f} s)\n"
               f"  dense : top-1 {d['top1']:.2f}%  top-5 {d['top5']:.2f}%  loss {d['loss']:.4f}\n"
               f"  pruned: top-1 {f['top1']:.2f}%  top-5 {f['top5']:.2f}%  loss {f['loss']:.4f}\n"
               f"  {folder}/model.safetensors, mask.safetensors, curve.csv, curve.png, manifest.json")


@click.command()
@click.argument("path", type=click.Path())
@click.option("--base", default=None, help="Base model spec (default: the one recorded in the file).")
@click.option("--weights", default=None)
@click.option("--weights-file", type=click.Path(), default=None, help="Base weights file.")
@click.option("--measure", is_flag=True, help="Also evaluate the model and its base on the run's evaluation data "
                                              "and compare with the manifest's metrics (what `weights publish` does).")
def verify(path, base, weights, weights_file, measure):
    """Check a run folder (model, mask, manifest against each other and the base) or a .safetensors
    file (every weight equals its base value or zero)."""
    from connectome.pruning.verify import verify as check

    v = check(path, base, weights, weights_file)
    if measure and v.ok:
        if not Path(path).is_dir():
            raise ConnectomeError("--measure needs a run folder (its manifest records the evaluation data)")
        from connectome.weights.measure import measure as remeasure
        try:
            note = remeasure(Path(path), json.loads((Path(path) / "manifest.json").read_text()), v.base).note
        except ConnectomeError as e:
            v.problems.append(str(e))
        else:
            click.echo(f"metrics {note}", err=True)
    for w in v.warnings:
        click.echo(f"warning: {w}", err=True)
    r = v.invariant
    click.echo(f"{v.file}: {r.values:,} values in {r.tensors} tensors; zeroed {r.zeroed:,}; "
               f"zero in base {r.zero_in_base:,}; changed {r.violations:,}")
    if not v.ok:
        click.echo(f"FAIL: {r.first_violation or v.problems[0]}", err=True)
        for problem in v.problems[1:]:
            click.echo(f"FAIL: {problem}", err=True)
        sys.exit(1)
    click.echo("OK: every weight equals its base value or zero" +
               ("; model, mask and manifest agree" if Path(path).is_dir() else ""))
