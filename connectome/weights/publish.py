"""Publishing a finished run folder: verified against its base, copied beside the registry under
hash names, and entered in the registry."""

import contextlib
import json
import shutil
from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.models.load import file_sha256, load_model, read_state_file, source_of, state_sha256
from connectome.models.provenance import named_weights
from connectome.weights.measure import KEYS, check_recorded, measure
from connectome.weights.registry import NAME_RE, REGISTRY, _is_url, locked_registry, read_registry, write_registry


def _default_license(base_model: str) -> str:
    """The license of the base model's weights, as their source states it."""
    known = source_of(base_model).license(base_model)
    if known is None:
        raise ConnectomeError(f"pass --license: the terms of {base_model}'s weights are not known here")
    return known


def _check_curve(run: Path, manifest: dict) -> None:
    """The run's curve agrees with its manifest: the same final and dense metrics, the last evaluation
    of the final mask."""
    from connectome.pruning.curves import read_csv

    rows = [r for r in read_csv(run / "curve.csv") if r.get("eval_top1") is not None]
    if not rows:
        raise ConnectomeError(f"{run}/curve.csv holds no evaluation")
    dense, final = rows[0], rows[-1]
    result = manifest["result"]
    for label, row in (("final", final), ("dense", dense)):
        if any(result[label][k] != row[f"eval_{k}"] for k in KEYS):
            raise ConnectomeError(f"{run}: curve.csv and manifest.json disagree on the {label} metrics")
    if final["removed"] != result["removed"]:
        raise ConnectomeError(f"{run}: the last evaluation is not of the final mask")


def _as_tv(metrics: dict, samples: int) -> dict:
    """Metrics as torchvision's weights meta names them."""
    return {"acc@1": metrics["top1"], "acc@5": metrics["top5"], "loss": metrics["loss"], "samples": samples}


def architecture(spec: str) -> str:
    """The architecture a model spec builds, as a registry name's `arch` part spells it: `resnet50`
    for torchvision's resnet50 and for timm:resnet50.a1_in1k, `fn` for a builder pkg.mod:fn."""
    return spec.rsplit(":", 1)[-1].split(".")[0].lower().replace("-", "_")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name) if len(str(name)) <= 60 else f"{str(name)[:60]!r}... ({len(name)} characters)"
        raise ConnectomeError(f"name {shown}: use arch.tag in lower case, letters, digits and _, at most 150 "
                              f"characters (e.g. lenet_300_100.connectome_50pct_fmnist)")


def _check_arch(name: str, model: str) -> None:
    """A name's arch is the run's: `load('resnet50.x')` must not give a LeNet."""
    arch = architecture(model)
    if name.split(".")[0] != arch:
        raise ConnectomeError(f"name {name!r}: the run pruned {model}, so its name is {arch}.TAG "
                              f"(e.g. {arch}.{name.split('.', 1)[1]})")


def _check_registry(registry: Path) -> None:
    """A local registry file, or a path where one can be written: said before the run is measured."""
    if _is_url(str(registry)):
        raise ConnectomeError("--registry for publish is a local file")
    if registry.is_dir():
        raise ConnectomeError(f"--registry {registry} is a folder: name the registry file, e.g. "
                              f"{registry / 'registry.json'}")
    for parent in registry.parents:
        if parent.exists() and not parent.is_dir():
            raise ConnectomeError(f"--registry {registry} lies under {parent}, which is a file, not a folder")


@contextlib.contextmanager
def _placed(copies: dict[Path, Path]):
    """Copy each source to its hash-named destination beside the registry for the block; a copy this
    call made is removed again if the block fails, so a failed publish leaves no file behind. A file of
    that name that already holds the same bytes (published before) is kept as it is."""
    from connectome.io import atomic_path

    created = []
    try:
        for src, dest in copies.items():
            if dest.is_file() and file_sha256(dest) == file_sha256(src):
                continue
            existed = dest.exists()
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
            if not existed:
                created.append(dest)
        yield
    except BaseException:
        for dest in created:
            dest.unlink(missing_ok=True)
        raise


def publish(run_dir: str | Path, name: str, url_base: str = "", registry: str | Path | None = None,
            license: str | None = None, replace: bool = False) -> dict:
    """Copy a run folder's model and mask beside the registry under hash names, and add their entry.

    With an empty `url_base` the urls are relative to the registry (for committed files); otherwise
    they are `url_base/<file name>`, where the files are to be uploaded. Nothing is published that
    does not verify, and the metrics entered are measured again here (connectome.weights.measure).
    Concurrent publishes into one registry each add their entry (registry.locked_registry)."""
    from connectome.io import read_metadata
    from connectome.pruning.mask import Mask
    from connectome.pruning.verify import verify

    _check_name(name)
    run = Path(run_dir)
    for f in ("model.safetensors", "mask.safetensors", "curve.csv", "manifest.json"):
        if not (run / f).is_file():
            raise ConnectomeError(f"{run} is not a finished run folder: {f} is missing")
    try:
        meta = read_metadata(run / "model.safetensors")
    except Exception:
        raise ConnectomeError(f"{run / 'model.safetensors'} is not a readable safetensors file") from None
    registry = Path(registry or REGISTRY)
    _check_registry(registry)
    if meta.get("base_model"):  # said before the run is verified and measured (verify refuses a model naming none)
        _check_arch(name, meta["base_model"])
        license = license or _default_license(meta["base_model"])
    entries, _ = read_registry(registry) if registry.is_file() else ({}, None)
    verdict = verify(run)  # the invariant against the base, and model, mask and manifest against each other
    if not verdict.ok:
        raise ConnectomeError(f"{run} fails verification, nothing published: "
                              f"{verdict.invariant.first_violation or verdict.problems[0]}")
    manifest = json.loads((run / "manifest.json").read_text())
    state = read_state_file(run / "model.safetensors")
    mask = Mask.load(run / "mask.safetensors")
    removed, prunable = int(meta["removed"]), int(meta["prunable"])
    if mask.removed() != removed or manifest["result"]["removed"] != removed:
        raise ConnectomeError(f"{run}: model, mask and manifest disagree on the number removed")
    # The mask-only file must rebuild this model from the base: every masked weight is zero here.
    mask.check_fits(state)
    if any(bool(state[n][~m].any()) for n, m in mask.items()):
        raise ConnectomeError(f"{run}: the model has non-zero weights where the mask removed them")
    try:
        check_recorded(run, manifest["result"])
    except ConnectomeError as e:
        raise ConnectomeError(f"{e}: nothing published") from None
    _check_curve(run, manifest)
    # The published numbers are measured, not read: a consistent edit of curve and manifest would pass
    # every check above (connectome.weights.measure).
    try:
        measured = measure(run, manifest, verdict.base)
    except ConnectomeError as e:
        raise ConnectomeError(f"{e}: nothing published") from None
    final, dense = (_as_tv(measured.final, measured.samples), _as_tv(measured.dense, measured.samples))
    # Building the architecture checks that the file fits it, and counts parameters as torchvision does.
    base_model, base_weights = meta["base_model"], meta["base_weights"]
    module = load_model(base_model, weights=named_weights(base_weights),
                        weights_file=str(run / "model.safetensors")).module
    params = list(module.parameters())

    sources = {"model": run / "model.safetensors", "mask": run / "mask.safetensors"}
    hashes = {kind: file_sha256(src) for kind, src in sources.items()}
    _check_unused(entries, name, hashes["model"], replace)  # said before the files are copied
    names = {"model": f"{name}-{hashes['model'][:8]}.safetensors", "mask": f"{name}.mask-{hashes['mask'][:8]}.safetensors"}
    files = {kind: {"url": f"{url_base.rstrip('/')}/{names[kind]}" if url_base else names[kind],
                    "sha256": hashes[kind], "size": src.stat().st_size} for kind, src in sources.items()}
    dataset = (manifest["data"]["spec"] or "").split(":")[0]
    entry = {
        "arch": name.split(".")[0],
        "base": {"model": base_model, "weights": base_weights, "sha256": meta["base_sha256"]},
        **files["model"],
        "state_sha256": state_sha256(state),  # what either file loads into the model, bit for bit
        "mask": files["mask"],
        "removed": removed, "prunable": prunable, "sparsity": round(removed / prunable, 6),
        "criterion": meta["criterion"],
        "recipe": manifest["settings"],
        "license": license,
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
    with locked_registry(registry) as entries:  # read again: another publish may have added entries since
        _check_unused(entries, name, hashes["model"], replace)
        with _placed({src: registry.parent / names[kind] for kind, src in sources.items()}):
            entries[name] = entry
            write_registry(registry, entries)
    return entry


def _check_unused(entries: dict, name: str, sha256: str, replace: bool) -> None:
    if name in entries and entries[name]["sha256"] != sha256 and not replace:
        raise ConnectomeError(f"{name} is already published with other weights: choose another name or pass --replace")
