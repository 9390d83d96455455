"""The metrics a registry entry publishes, measured again on the run's own evaluation data.

A run folder's curve.csv and manifest.json are plain text: whoever can edit one can edit both
consistently, and a digest of them kept beside them could be recomputed by the same editor. So the
final and dense metrics that `publish` enters are not read from the folder but measured: the pruned
model (model.safetensors) and its base, each evaluated on the evaluation split the manifest records
(data spec, eval_samples, seed, preprocessing, batch size), then compared with what the manifest
says. A disagreement beyond evaluation noise across devices (two images of top-1 or top-5, 1% of the
loss) refuses the publish, and so do metrics that are not finite numbers and a run whose evaluation
data is not on this machine: nothing is published that was not measured here. The settings that
choose the evaluation split are those whose digest `verify` recomputed. `verify --measure` runs the
same measurement.
"""

import math
from dataclasses import dataclass
from pathlib import Path

from connectome.errors import ConnectomeError

KEYS = ("top1", "top5", "loss")


@dataclass
class Measured:
    final: dict  # {"top1", "top5", "loss"} of the pruned model
    dense: dict
    samples: int
    note: str  # how the published metrics were obtained, for the entry and the command's output


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _agrees(recorded: dict, measured: dict, samples: int) -> bool:
    images = 100.0 * 2 / max(1, samples)  # two images either way: another device's rounding, not an edit
    for k in ("top1", "top5"):
        if abs(recorded[k] - measured[k]) > max(images, 1e-6):
            return False
    return abs(recorded["loss"] - measured["loss"]) <= 0.01 * abs(measured["loss"]) + 1e-6


def check_recorded(run: Path, result: dict) -> None:
    """The manifest's final and dense metrics are finite numbers: NaN is never more than two images away
    from anything, so it would agree with every measurement."""
    for label in ("final", "dense"):
        recorded = result.get(label) if isinstance(result.get(label), dict) else {}
        bad = [k for k in KEYS if not _finite(recorded.get(k))]
        if bad:
            raise ConnectomeError(f"{run}: manifest.json records {label} {bad[0]} {recorded.get(bad[0])}, "
                                  f"not a finite number")


def measure(run: Path, manifest: dict, base_module) -> Measured:
    """Evaluate the run's model and `base_module` on the run's evaluation data; ConnectomeError if
    the manifest's metrics are not what they measure."""
    from connectome.data import default_workers, load_dataset, subset
    from connectome.device import resolve_device
    from connectome.evaluate import evaluate
    from connectome.models.load import load_model
    from connectome.models.provenance import Provenance

    settings, info, result = (manifest.get(k) if isinstance(manifest.get(k), dict) else {}
                              for k in ("settings", "data", "result"))
    data = info.get("spec")
    check_recorded(run, result)
    if not data or not isinstance(data, str):
        raise ConnectomeError(f"{run}: its metrics cannot be measured again: manifest.json names no evaluation data")
    model = settings.get("model") or manifest["model"]["spec"]
    try:
        weights = Provenance.from_label(manifest["model"].get("weights") or "untrained", model).torchvision_weights
    except ValueError:
        weights = None
    pruned = load_model(model, weights=weights, weights_file=str(run / "model.safetensors"),
                        preprocess=settings.get("preprocess") or None)
    try:
        splits = load_dataset(data, pruned.transforms)
    except ConnectomeError as e:  # the data lives on another machine (or the manifest names none that exists)
        raise ConnectomeError(f"{run}: its metrics cannot be measured again: the evaluation data is not here "
                              f"({e}); run this where {data} is") from None
    n, seed = settings.get("eval_samples"), int(settings.get("seed") or 0)
    dataset = subset(splits.test, n, seed) if n else splits.test
    recorded = info.get("eval_samples")
    if recorded != len(dataset):  # the split the settings choose must be the one the run evaluated on
        raise ConnectomeError(f"{run}: manifest.json records {recorded} evaluation images, its settings choose "
                              f"{len(dataset):,} of {data}")
    device, batch = resolve_device("auto"), int(settings.get("batch_size") or 256)
    out = {}
    for label, module in (("final", pruned.module), ("dense", base_module)):
        m = evaluate(module.to(device), dataset, batch, device, workers=default_workers(dataset))
        out[label] = {"top1": m.top1, "top5": m.top5, "loss": m.loss}
        if not all(_finite(v) for v in out[label].values()):
            raise ConnectomeError(f"{run}: the {'pruned' if label == 'final' else 'base'} model measures a "
                                  f"non-finite loss or accuracy on {data}")
        if not _agrees(result[label], out[label], m.samples):
            r = result[label]
            raise ConnectomeError(
                f"{run}: manifest.json records {label} top-1 {_pct(r.get('top1'))}, top-5 {_pct(r.get('top5'))}, "
                f"loss {r.get('loss')}, but the {'pruned' if label == 'final' else 'base'} model measures "
                f"{m.top1:.2f}%, {m.top5:.2f}%, {m.loss:.4f} on {data} ({m.samples:,} images)")
    return Measured(out["final"], out["dense"], len(dataset), f"measured again on {data} ({len(dataset):,} images)")


def _pct(value) -> str:
    return f"{float(value):.2f}%" if isinstance(value, (int, float)) else repr(value)
