"""Publishing a finished run folder: verified against its base, copied beside the registry under
hash names, and entered in the registry."""

import json
import shutil
from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.models.load import file_sha256, load_model, read_state_file, source_of, state_sha256
from connectome.models.provenance import named_weights
from connectome.weights.measure import KEYS, measure
from connectome.weights.registry import FORMAT, NAME_RE, REGISTRY, _is_url, read_registry


def _default_license(base_model: str) -> str:
    """The license of the base model's weights, as their source states it."""
    known = source_of(base_model).license(base_model)
    if known is None:
        raise ConnectomeError(f"pass --license: the terms of {base_model}'s weights are not known here")
    return known


def _run_metrics(run: Path, manifest: dict) -> tuple[dict, dict]:
    """Final and dense evaluation metrics, read from the run's curve and checked against its manifest."""
    from connectome.pruning.curves import read_csv

    rows = [r for r in read_csv(run / "curve.csv") if r.get("eval_top1") is not None]
    if not rows:
        raise ConnectomeError(f"{run}/curve.csv holds no evaluation")
    dense, final = rows[0], rows[-1]
    result = manifest["result"]
    for label, row in (("final", final), ("dense", dense)):
        if any(result[label][k] != row[f"eval_{k}"] for k in ("top1", "top5", "loss")):
            raise ConnectomeError(f"{run}: curve.csv and manifest.json disagree on the {label} metrics")
    if final["removed"] != result["removed"]:
        raise ConnectomeError(f"{run}: the last evaluation is not of the final mask")
    samples = manifest["data"]["eval_samples"]
    return (_as_tv({k: final[f"eval_{k}"] for k in KEYS}, samples), _as_tv({k: dense[f"eval_{k}"] for k in KEYS}, samples))


def _as_tv(metrics: dict, samples: int) -> dict:
    """Metrics as torchvision's weights meta names them."""
    return {"acc@1": metrics["top1"], "acc@5": metrics["top5"], "loss": metrics["loss"], "samples": samples}


def publish(run_dir: str | Path, name: str, url_base: str = "", registry: str | Path | None = None,
            license: str | None = None, replace: bool = False) -> dict:
    """Copy a run folder's model and mask beside the registry under hash names, and add their entry.

    With an empty `url_base` the urls are relative to the registry (for committed files); otherwise
    they are `url_base/<file name>`, where the files are to be uploaded."""
    from connectome.io import atomic_path, read_metadata, write_text
    from connectome.pruning.mask import Mask
    from connectome.pruning.verify import verify

    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ConnectomeError(f"name {name!r}: use arch.tag in lower case, letters, digits and _ "
                              f"(e.g. lenet_300_100.connectome_50pct_fmnist)")
    run = Path(run_dir)
    for f in ("model.safetensors", "mask.safetensors", "curve.csv", "manifest.json"):
        if not (run / f).is_file():
            raise ConnectomeError(f"{run} is not a finished run folder: {f} is missing")
    registry = Path(registry or REGISTRY)
    if _is_url(str(registry)):
        raise ConnectomeError("--registry for publish is a local file")
    entries, _ = read_registry(registry) if registry.is_file() else ({}, None)
    verdict = verify(run)  # the invariant against the base, and model, mask and manifest against each other
    if not verdict.ok:
        raise ConnectomeError(f"{run} fails verification, nothing published: "
                              f"{verdict.invariant.first_violation or verdict.problems[0]}")
    manifest = json.loads((run / "manifest.json").read_text())
    meta = read_metadata(run / "model.safetensors")
    state = read_state_file(run / "model.safetensors")
    mask = Mask.load(run / "mask.safetensors")
    removed, prunable = int(meta["removed"]), int(meta["prunable"])
    if mask.removed() != removed or manifest["result"]["removed"] != removed:
        raise ConnectomeError(f"{run}: model, mask and manifest disagree on the number removed")
    # The mask-only file must rebuild this model from the base: every masked weight is zero here.
    mask.check_fits(state)
    if any(bool(state[n][~m].any()) for n, m in mask.items()):
        raise ConnectomeError(f"{run}: the model has non-zero weights where the mask removed them")
    final, dense = _run_metrics(run, manifest)
    # The published numbers are measured, not read: a consistent edit of curve and manifest would pass
    # every check above (connectome.weights.measure).
    try:
        measured = measure(run, manifest, verdict.base)
    except ConnectomeError as e:
        raise ConnectomeError(f"{e}: nothing published") from None
    if measured.final is not None:
        final, dense = (_as_tv(measured.final, measured.samples), _as_tv(measured.dense, measured.samples))
    # Building the architecture checks that the file fits it, and counts parameters as torchvision does.
    base_model, base_weights = meta["base_model"], meta["base_weights"]
    module = load_model(base_model, weights=named_weights(base_weights),
                        weights_file=str(run / "model.safetensors")).module
    params = list(module.parameters())

    sources = {"model": run / "model.safetensors", "mask": run / "mask.safetensors"}
    hashes = {kind: file_sha256(src) for kind, src in sources.items()}
    if name in entries and entries[name]["sha256"] != hashes["model"] and not replace:
        raise ConnectomeError(f"{name} is already published with other weights: choose another name or pass --replace")
    files = {}
    for kind, src in sources.items():
        sha = hashes[kind]
        file_name = f"{name}-{sha[:8]}.safetensors" if kind == "model" else f"{name}.mask-{sha[:8]}.safetensors"
        with atomic_path(registry.parent / file_name) as tmp:
            shutil.copyfile(src, tmp)
        url = f"{url_base.rstrip('/')}/{file_name}" if url_base else file_name
        files[kind] = {"url": url, "sha256": sha, "size": src.stat().st_size}

    dataset = (manifest["data"]["spec"] or "").split(":")[0]
    entries[name] = {
        "arch": name.split(".")[0],
        "base": {"model": base_model, "weights": base_weights, "sha256": meta["base_sha256"]},
        **files["model"],
        "state_sha256": state_sha256(state),  # what either file loads into the model, bit for bit
        "mask": files["mask"],
        "removed": removed, "prunable": prunable, "sparsity": round(removed / prunable, 6),
        "criterion": meta["criterion"],
        "recipe": manifest["settings"],
        "license": license or _default_license(base_model),
        "command": manifest["command"],
        "meta": {
            "num_params": sum(p.numel() for p in params),
            "num_nonzero_params": sum(int(p.count_nonzero()) for p in params),
            "_metrics": {dataset: final},
            "_base_metrics": {dataset: dense},
            "_metrics_source": measured.note,
            "_file_size": round(files["model"]["size"] / 2**20, 3),
            "_mask_file_size": round(files["mask"]["size"] / 2**20, 3),
            "versions": manifest.get("versions", {}),
        },
    }
    write_text(registry, json.dumps({"format": FORMAT, "weights": dict(sorted(entries.items()))}, indent=2) + "\n")
    return entries[name]
