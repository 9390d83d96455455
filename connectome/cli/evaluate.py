"""`connectome eval`: top-1, top-5 and loss of a model on its evaluation split."""

import click

from connectome.device import resolve_device
from connectome.errors import ConnectomeError
from connectome.pruning.settings import PruneSettings
from connectome.settings import INT64

_SEED = next(s for s in PruneSettings.specs() if s.name == "seed")

model_options = [
    click.option("--weights", default=None, help="torchvision weights name, e.g. IMAGENET1K_V1 (default: DEFAULT)."),
    click.option("--weights-file", type=click.Path(), default=None,
                 help="Local weights (safetensors, or .pth read with weights_only=True) instead of a download."),
]


def with_model_options(f):
    for option in reversed(model_options):
        f = option(f)
    return f


@click.command("eval")
@click.argument("model")
@with_model_options
@click.option("--data", default=None, help="Data spec (default: the reference model's own data); imagenet:PATH "
                                          "for wnid folders, labelled with their ImageNet-1k indices.")
@click.option("--preprocess", multiple=True, metavar="KEY=VALUE",
              help="Override the model's eval preprocessing (timm data-config keys: input_size, interpolation, "
                   "mean, std, crop_pct, crop_mode), e.g. --preprocess crop_pct=1.0; repeatable.")
@click.option("--eval-samples", type=click.IntRange(1, INT64), default=None, help="Evaluate a seeded subset of this size.")
@click.option("--batch-size", type=click.IntRange(1, INT64), default=256, show_default=True)
@click.option("--seed", type=click.IntRange(_SEED.meta["minimum"], _SEED.meta["maximum"]), default=0, show_default=True,
              help="Seed of the --eval-samples subset (the range of prune's --seed).")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_(model, weights, weights_file, data, preprocess, eval_samples, batch_size, seed, device, as_json):
    """Top-1, top-5 and mean cross-entropy of MODEL on the evaluation split."""
    from connectome.data import load_dataset, subset
    from connectome.evaluate import evaluate
    from connectome.models.load import load_model

    device = resolve_device(device)
    loaded = load_model(model, weights=weights, weights_file=weights_file, preprocess=list(preprocess))
    data = data or loaded.dataset
    if not data:
        raise ConnectomeError(f"--data is required for {model}")
    splits = load_dataset(data, loaded.transforms)
    dataset = subset(splits.test, eval_samples, seed) if eval_samples else splits.test
    m = evaluate(loaded.module.to(device), dataset, batch_size, device, progress=True)
    click.echo(m.as_json() if as_json else f"{model} on {data}: {m}")
