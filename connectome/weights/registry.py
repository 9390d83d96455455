"""Published pruned weights: a registry, hash-checked downloads, publishing from a run folder, loading.

The registry (weights/registry.json) holds one entry per checkpoint, named timm-style `arch.tag`
(`lenet_300_100.connectome_50pct_fmnist`). Each entry points at two files: the pruned model and the
compact mask (packed bits), both named `name-<first 8 hex of sha256>.safetensors`, the convention
that `torch.hub.load_state_dict_from_url(check_hash=True)` checks. Downloads go where torch.hub puts
torchvision's weights (`torch.hub.get_dir()/checkpoints/<file name>`), through torch.hub's own
downloader, and are verified against the full sha256 of the entry.

A relative `url` resolves against the registry's own location (a folder or an http(s) URL), so a
registry and its files can be committed, copied or served together.
"""

import difflib
import functools
import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from connectome.errors import ConnectomeError
from connectome.models.load import WEIGHTS_DIR, file_sha256, load_model, load_weights, read_state_file, state_sha256

REGISTRY = WEIGHTS_DIR / "registry.json"
FORMAT = "connectome.registry/1"
# No '-' in a name: torch.hub's HASH_REGEX takes the first "-<hex>." of a file name as its hash.
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z0-9_]+$")


@dataclass(frozen=True)
class Weights:
    """torchvision's `Weights` record (url, transforms, meta), plus the registry name and entry."""
    name: str
    url: str
    transforms: Callable[[], Any]  # builds the eval preprocessing, as torchvision's `weights.transforms()`
    meta: dict
    entry: dict


# --- the registry ---------------------------------------------------------------------------------

def _is_url(s: str) -> bool:
    return urllib.parse.urlparse(str(s)).scheme in ("http", "https")


def read_registry(registry: str | Path | None = None) -> tuple[dict[str, dict], str]:
    """The entries of a registry file or URL, and the location relative urls resolve against."""
    source = str(registry or REGISTRY)
    if _is_url(source):
        try:
            with urllib.request.urlopen(source, timeout=30) as r:
                data = json.loads(r.read())
        except (urllib.error.URLError, OSError) as e:
            raise ConnectomeError(f"cannot read the registry {source} ({_reason(e)})") from None
        except ValueError:
            raise ConnectomeError(f"{source} is not a JSON registry") from None
    else:
        path = Path(source)
        if not path.is_file():
            if registry is None:  # no entry published yet: an empty default registry
                return {}, str(path.parent)
            raise ConnectomeError(f"registry {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except ValueError:
            raise ConnectomeError(f"{path} is not a JSON registry") from None
        source = str(path.resolve())
    if data.get("format") != FORMAT:
        raise ConnectomeError(f"{source} is not a connectome weights registry (format {data.get('format')!r})")
    return data["weights"], _parent(source)


def summary(name: str, entry: dict) -> dict:
    """One line of the registry, as `connectome weights list` and the service's /api/weights show it."""
    (dataset, metrics), = entry["meta"]["_metrics"].items()
    return {"name": name, "base": entry["base"]["model"], "removed": entry["removed"], "sparsity": entry["sparsity"],
            "top1": metrics["acc@1"], "dataset": dataset, "size": entry["size"], "mask_size": entry["mask"]["size"],
            "url": entry["url"], "mask_url": entry["mask"]["url"]}


def _parent(source: str) -> str:
    return urllib.parse.urljoin(source, ".") if _is_url(source) else str(Path(source).parent)


def get_entry(name: str, registry: str | Path | None = None) -> tuple[dict, str]:
    entries, base = read_registry(registry)
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see `connectome weights list`)"
        raise ConnectomeError(f"no published weights named {name!r}{hint}")
    return entries[name], base


def resolve(url: str, base: str) -> str:
    """A file's location: absolute http(s) as is, a relative url against the registry's location."""
    if _is_url(url):
        return url
    return urllib.parse.urljoin(base, url) if _is_url(base) else str(Path(base) / url)


# --- download -------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where torch.hub.load_state_dict_from_url keeps torchvision's weights (follows TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def pull(name: str, registry: str | Path | None = None, mask: bool = False, progress: bool = True) -> Path:
    """The verified local path of a published file (the model, or with `mask=True` the mask file).

    A file next to a local registry is used in place; a URL is downloaded once into torch's hub
    cache. A download whose sha256 differs from the entry is deleted and refused."""
    entry, base = get_entry(name, registry)
    return _fetch(name, entry["mask"] if mask else entry, base, progress)


def _fetch(name: str, record: dict, base: str, progress: bool) -> Path:
    location = resolve(record["url"], base)
    expected = record["sha256"]
    file_name = os.path.basename(urllib.parse.urlparse(location).path) if _is_url(location) else Path(location).name
    found = torch.hub.HASH_REGEX.search(file_name)
    if not found or not expected.startswith(found.group(1)) or len(found.group(1)) < 8:
        raise ConnectomeError(f"{record['url']}: a published file is named NAME-<sha256 prefix>.ext, "
                              f"and its prefix must match the entry's sha256 {expected[:8]}")
    if not _is_url(location):
        path = Path(location)
        if not path.is_file():
            raise ConnectomeError(f"{name}: {path} does not exist")
        if file_sha256(path) != expected:
            raise ConnectomeError(f"{path} does not match the sha256 of {name}: it was changed after publishing")
        return path
    path = cache_dir() / file_name
    if path.is_file():
        if file_sha256(path) == expected:
            return path
        path.unlink()  # a damaged cached copy: fetch it again
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Writes a temporary file and moves it into place only when the full sha256 matches.
        torch.hub.download_url_to_file(location, str(path), hash_prefix=expected, progress=progress)
    except RuntimeError as e:
        if "invalid hash value" in str(e):
            raise ConnectomeError(f"{location} does not match the sha256 of {name} ({expected[:8]}...): "
                                  f"download refused and deleted") from None
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise ConnectomeError(f"cannot download {location} ({_reason(e)})") from None
    return path


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None)
    return str(reason if reason is not None and not isinstance(e, urllib.error.HTTPError) else e)[:200]


# --- publish --------------------------------------------------------------------------------------

def _torchvision_weights(label: str) -> str | None:
    """`MobileNet_V3_Large_Weights.IMAGENET1K_V1` -> `IMAGENET1K_V1`; other labels carry a scheme."""
    return label.rsplit(".", 1)[1] if ":" not in label and "." in label else None


def _default_license(base_model: str) -> str:
    from connectome.models.reference import ARCHITECTURES
    if base_model in ARCHITECTURES:
        return "BSD-3-Clause"  # the project's own weights
    if base_model.startswith("timm:"):
        import timm
        cfg = timm.models.get_pretrained_cfg(base_model[5:])
        if cfg is not None and cfg.license:
            return cfg.license
    raise ConnectomeError(f"pass --license: the terms of {base_model}'s weights are not known here")


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
    as_tv = lambda r: {"acc@1": r["eval_top1"], "acc@5": r["eval_top5"], "loss": r["eval_loss"], "samples": samples}
    return as_tv(final), as_tv(dense)


def publish(run_dir: str | Path, name: str, url_base: str = "", registry: str | Path | None = None,
            license: str | None = None, replace: bool = False) -> dict:
    """Copy a run folder's model and mask beside the registry under hash names, and add their entry.

    With an empty `url_base` the urls are relative to the registry (for committed files); otherwise
    they are `url_base/<file name>`, where the files are to be uploaded."""
    from connectome.io import atomic_path, read_metadata, write_text
    from connectome.pruning.mask import Mask

    if not NAME_RE.match(name):
        raise ConnectomeError(f"--name {name!r}: use arch.tag in lower case, letters, digits and _ "
                              f"(e.g. lenet_300_100.connectome_50pct_fmnist)")
    run = Path(run_dir)
    for f in ("model.safetensors", "mask.safetensors", "curve.csv", "manifest.json"):
        if not (run / f).is_file():
            raise ConnectomeError(f"{run} is not a finished run folder: {f} is missing")
    registry = Path(registry or REGISTRY)
    if _is_url(str(registry)):
        raise ConnectomeError("--registry for publish is a local file")
    entries, _ = read_registry(registry) if registry.is_file() else ({}, None)
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
    # Building the architecture checks that the file fits it, and counts parameters as torchvision does.
    base_model, base_weights = meta["base_model"], meta["base_weights"]
    module = load_model(base_model, weights=_torchvision_weights(base_weights),
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
            "_file_size": round(files["model"]["size"] / 2**20, 3),
            "_mask_file_size": round(files["mask"]["size"] / 2**20, 3),
            "versions": manifest.get("versions", {}),
        },
    }
    write_text(registry, json.dumps({"format": FORMAT, "weights": dict(sorted(entries.items()))}, indent=2) + "\n")
    return entries[name]


# --- load -----------------------------------------------------------------------------------------

def _default_transforms(base_model: str):
    """The reference models take `ToTensor()` images of their own size and normalise inside."""
    from torchvision.transforms import v2 as T
    from connectome.models.reference import ARCHITECTURES

    channels, height, _ = ARCHITECTURES[base_model].input_shape
    return T.Compose([T.Grayscale(1) if channels == 1 else T.RGB(), T.Resize(height, antialias=True),
                      T.CenterCrop(height), T.PILToTensor(), T.ToDtype(torch.float32, scale=True)])


def _same(x):
    return x


def _base_source(entry: dict, base_weights_file: str | None) -> dict:
    """load_model arguments that fetch the base weights from the base model's own source."""
    label = entry["base"]["weights"]
    if base_weights_file:
        return {"weights_file": str(base_weights_file)}
    if label.startswith("file:"):
        raise ConnectomeError(f"{entry['base']['model']} was pruned from a local file ({label[5:]}): "
                              f"pass base_weights_file= (sha256 {entry['base']['sha256'][:8]}...)")
    return {"weights": _torchvision_weights(label)}


def load(name: str, registry: str | Path | None = None, via: str = "model",
         base_weights_file: str | Path | None = None, progress: bool = True) -> nn.Module:
    """A published pruned model, ready to use, in eval mode.

        model = connectome.load("lenet_300_100.connectome_50pct_fmnist")
        preprocess = model.transforms()        # as torchvision's weights.transforms()
        model(preprocess(image).unsqueeze(0))

    The returned module also carries `model.weights`, a `Weights` record (url, transforms, meta).
    `via="model"` downloads the pruned checkpoint; `via="mask"` downloads only the mask (1/32 of the
    size), fetches the base weights from the base model's own source (torchvision, timm, the
    project's reference files, or `base_weights_file`), refuses them unless their state sha256 is the
    one the entry records, and zeroes the removed weights. Either way the result is checked, bit for
    bit, against the published state.
    """
    from connectome.pruning.mask import Mask

    if via not in ("model", "mask"):
        raise ConnectomeError(f"via={via!r}: choose 'model' or 'mask'")
    entry, base = get_entry(name, registry)
    spec = entry["base"]["model"]
    path = _fetch(name, entry["mask"] if via == "mask" else entry, base, progress)
    if via == "model":
        loaded = load_model(spec, weights=_torchvision_weights(entry["base"]["weights"]), weights_file=str(path))
    else:
        loaded = load_model(spec, **_base_source(entry, base_weights_file))
        base_state = {k: v.detach() for k, v in loaded.module.state_dict().items()}
        if state_sha256(base_state) != entry["base"]["sha256"]:
            raise ConnectomeError(f"the base weights of {spec} ({loaded.weights}) are not those {name} was pruned "
                                  f"from (state sha256 {entry['base']['sha256'][:8]}...)")
        load_weights(loaded.module, Mask.load(path).apply(base_state), str(path))
    if state_sha256(loaded.module.state_dict()) != entry["state_sha256"]:
        raise ConnectomeError(f"{name}: the loaded weights differ from the published ones")
    model = loaded.module.eval()
    preset = loaded.transforms if loaded.transforms is not None else _default_transforms(spec)
    # A plain callable, not the transform module itself: assigning an nn.Module would register it as
    # a submodule of the model (and put it into state_dict, .to(), named_modules()).
    transforms = functools.partial(_same, preset)
    model.weights = Weights(name, resolve(entry["url"], base), transforms, entry["meta"], entry)
    model.transforms = transforms
    return model
