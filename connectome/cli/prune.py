"""`connectome prune` and `connectome verify`."""

import contextlib
import re
import shlex
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from connectome.errors import ConnectomeError
from connectome.pruning.run import SETTING_NAMES, PruneSettings


def settings_from(params: dict, ctx: click.Context) -> PruneSettings:
    """Recipe values, overridden by the flags given on the command line."""
    from connectome.recipes import load_recipe

    values = load_recipe(params["recipe"], "prune", SETTING_NAMES) if params.get("recipe") else {}
    for name in SETTING_NAMES:
        if name in params and (ctx.get_parameter_source(name) != ParameterSource.DEFAULT or name not in values):
            value = params[name]
            values[name] = list(value) if isinstance(value, tuple) else value
    for name in ("model", "remove"):
        if not values.get(name):
            raise ConnectomeError(f"{name.upper()} is required (as an argument, --{name} or in the recipe)")
    values = {k: v for k, v in values.items() if v is not None or k in ("data", "weights", "weights_file", "eval_samples", "max_top1_drop")}
    values["remove"] = str(values["remove"])
    return PruneSettings(**values)


def default_out(s: PruneSettings) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", s.model).strip("_")
    return Path("runs") / f"{slug}-{s.digest()[:8]}"


@click.command()
@click.argument("model", required=False)
@click.option("--remove", help="How many weights to zero: 12345, 250k, 1M, 20%.")
@click.option("--data", default=None, help="Data spec (default: the reference model's own data).")
@click.option("--recipe", default=None, help="A recipe (file or name in recipes/); flags override it.")
@click.option("--weights", default=None, help="torchvision weights name (default: DEFAULT).")
@click.option("--weights-file", type=click.Path(), default=None, help="Local base weights instead of a download.")
@click.option("--criterion", default="connectome", show_default=True,
              help="connectome, dloss, fisher, taylor, magnitude or random.")
@click.option("--confidence", type=float, default=8.0, show_default=True, help="z of the connectome criterion.")
@click.option("--include", multiple=True, help="Glob on parameter names to prune (repeatable).")
@click.option("--exclude", multiple=True, help="Glob on parameter names to keep (repeatable).")
@click.option("--calib-samples", type=int, default=10000, show_default=True, help="Training samples used (decision + acceptance).")
@click.option("--accept-fraction", type=float, default=0.2, show_default=True, help="Share of them that only accepts steps.")
@click.option("--eval-samples", type=int, default=None, help="Evaluation subset size (default: the whole split).")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--step", type=float, default=0.01, show_default=True, help="First step, fraction of prunable weights.")
@click.option("--max-step", type=float, default=0.05, show_default=True)
@click.option("--min-step", type=float, default=0.0005, show_default=True)
@click.option("--grow", type=float, default=1.5, show_default=True)
@click.option("--shrink", type=float, default=0.5, show_default=True)
@click.option("--tolerance", type=float, default=4.0, show_default=True,
              help="Accept while actual <= predicted + tolerance*sum(1/2*F*w^2) + 2*stderr(actual) + budget share.")
@click.option("--loss-budget", type=float, default=0.1, show_default=True,
              help="Surprise the whole run may spend, as a fraction of the dense loss, shared out by step size.")
@click.option("--max-top1-drop", type=float, default=None, help="Also reject steps losing more acceptance top-1 (points).")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True, help="Of the loss the statistics use.")
@click.option("--restore-cycles", type=int, default=0, show_default=True, help="Delete-and-restore steps after the target.")
@click.option("--restore-fraction", type=float, default=0.5, show_default=True, help="Share of a swap step restored.")
@click.option("--eval-every", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(), default=None, help="Run folder (default: runs/<model>-<settings hash>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last step.")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp", is_flag=True, help="bf16 autocast for forward/backward on GPU (statistics stay float64).")
@click.option("--channels-last/--no-channels-last", default=None,
              help="channels_last memory format for model and batches [default: on for CUDA, off on CPU].")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model used for statistics and evaluation.")
@click.option("--workers", type=int, default=None,
              help="DataLoader workers [default: 0 for in-memory datasets, a share of the cores for image folders].")
@click.option("--cache-calib", type=click.Path(file_okay=False), default=None,
              help="Decode the calibration images of an image folder once into uint8 tensor files in this folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def prune(ctx, **params):
    """Zero weights of a pretrained MODEL; write model, mask, curve and manifest to a run folder."""
    from connectome.io import folder_lock
    from connectome.device import resolve_device as _device
    from connectome.distributed import init_from_env, is_main
    from connectome.pruning.run import prepare

    s = settings_from(params, ctx)
    out = Path(params["out"]) if params["out"] else default_out(s)
    if (out / "state.safetensors").exists() and not params["resume"]:
        raise ConnectomeError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    device = init_from_env(_device(params["device"]))  # under torchrun: join the group, one device per rank
    setup = prepare(s, device)  # every check before anything is written
    if params["cache_calib"]:  # a cache folder, not the run folder: ranks and runs share it under its own lock
        from connectome.data.decoded import cache_calibration
        setup = cache_calibration(setup, params["cache_calib"], params["workers"], progress=not params["quiet"] and is_main())
    if is_main():  # one writer per run folder: a second process waits for the first to end
        lock = folder_lock(out, on_wait=lambda: click.echo(f"waiting for the process that holds {out}", err=True))
    else:
        lock = contextlib.nullcontext()
    with lock:
        _prune(params, setup, out, device)


def _prune(params: dict, setup, out: Path, device: str) -> None:
    import torch

    from connectome.distributed import is_main
    from connectome.pruning.run import Run, write_results

    s = setup.settings
    channels_last = params["channels_last"] if params["channels_last"] is not None else device.startswith("cuda")
    run = Run(setup, out, resume=params["resume"], progress=not params["quiet"],
              autocast_dtype=torch.bfloat16 if params["amp"] and device.startswith("cuda") else None,
              channels_last=channels_last, compile=params["compile_"], workers=params["workers"])
    if not is_main():
        run.run()
        return
    click.echo(f"{s.model}: removing {setup.target:,} of {run.prunable:,} prunable weights "
               f"({100 * setup.target / run.prunable:.1f}%) with {s.criterion}; run folder {out}", err=True)
    run.run()
    manifest = write_results(run, shlex.join(["connectome", *sys.argv[1:]]))
    d, f = manifest["result"]["dense"], manifest["result"]["final"]
    click.echo(f"removed {manifest['result']['removed']:,} weights in {manifest['result']['accepted_steps']} steps "
               f"({manifest['result']['seconds']:.0f} s)\n"
               f"  dense : top-1 {d['top1']:.2f}%  top-5 {d['top5']:.2f}%  loss {d['loss']:.4f}\n"
               f"  pruned: top-1 {f['top1']:.2f}%  top-5 {f['top5']:.2f}%  loss {f['loss']:.4f}\n"
               f"  {out}/model.safetensors, mask.safetensors, curve.csv, curve.png, manifest.json")


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
