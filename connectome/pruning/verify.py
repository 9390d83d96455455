"""`verify`: the proof that a run folder keeps the invariant and agrees with itself.

For a run folder: the model's every weight equals its base value or zero; the model equals the mask
applied to the base, bit for bit (so its zeros are exactly the mask's, beside zeros the base already
had); the counts of the model's metadata, the mask and the manifest agree; the manifest's settings
give its settings digest. For a lone .safetensors file, the invariant alone. Either way the base's
state sha256 must be the one the file records (another base proves nothing), and a base file whose
tensors have another dtype than the model is compared value by value as the file stores them.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from connectome.errors import ConnectomeError
from connectome.io import InvariantReport, check_invariant, read_metadata
from connectome.models.load import load_model, read_state_file, state_sha256
from connectome.models.provenance import Provenance
from connectome.pruning.mask import Mask


@dataclass
class Verdict:
    file: Path
    invariant: InvariantReport
    problems: list[str] = field(default_factory=list)  # each one a reason to fail
    warnings: list[str] = field(default_factory=list)
    base: object = field(default=None, repr=False)  # the base model it was checked against (publish evaluates it)

    @property
    def ok(self) -> bool:
        return self.invariant.ok and not self.problems


def verify(path: str | Path, base: str | None = None, weights: str | None = None,
           weights_file: str | None = None) -> Verdict:
    path = Path(path)
    folder = path if path.is_dir() else None
    file = path / "model.safetensors" if folder else path
    if not file.is_file():
        raise ConnectomeError(f"{file} does not exist")
    try:
        meta = read_metadata(file) if file.suffix == ".safetensors" else {}
    except Exception:
        raise ConnectomeError(f"{file} is not a readable safetensors file") from None
    base = base or meta.get("base_model")
    if not base:
        raise ConnectomeError(f"{file} names no base model: pass --base MODEL")
    try:
        origin = Provenance.from_label(meta.get("base_weights") or "untrained", base)
    except ValueError:
        origin = Provenance("", base)
    if weights_file is None and origin.file and Path(origin.file).is_file():
        weights_file = origin.file  # pruned from a local base file, which is still there
    loaded = load_model(base, weights=weights or origin.torchvision_weights, weights_file=weights_file)
    base_state = {k: v.detach().cpu() for k, v in loaded.module.state_dict().items()}
    state = read_state_file(file)
    stored, converted = _as_stored(weights_file, base_state)
    verdict = Verdict(file, check_invariant(state, stored), base=loaded.module)
    if converted:
        verdict.warnings.append(f"{weights_file} holds {converted}: compared with those values exactly, not as "
                                f"the model's dtype rounds them")
    recorded, found = meta.get("base_sha256"), state_sha256(base_state)
    if recorded and recorded != found:  # another base proves nothing about this model: a failure
        verdict.problems.append(f"the base weights are not those {file} was pruned from: their state sha256 is "
                                f"{found[:12]}..., the file records {recorded[:12]}...")
    if folder:
        _check_folder(folder, meta, state, base_state, verdict)
    return verdict


def _as_stored(weights_file: str | None, base_state: dict) -> tuple[dict, str]:
    """The base as its file stores it: loading casts every tensor into the model's dtype, so float64
    weights 1e-12 apart from a float32 model's would compare equal after the cast. Where the file's
    floating tensors have another dtype, those are what the model is compared with (and which
    dtypes, in words; empty where none differ)."""
    if not weights_file:
        return base_state, ""
    raw = read_state_file(weights_file)
    stored, kinds = dict(base_state), set()
    for name, t in base_state.items():
        r = raw.get(name)
        if isinstance(r, torch.Tensor) and r.is_floating_point() and t.is_floating_point() and \
                r.dtype != t.dtype and r.shape == t.shape:
            stored[name] = r
            kinds.add(f"{_dtype(r)} tensors where the model has {_dtype(t)}")
    return stored, "; ".join(sorted(kinds))


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _check_settings(folder: Path, manifest: dict) -> str | None:
    """Why the manifest's settings are not the run's, or None: their digest, recomputed, must be the one
    recorded (the settings decide what `verify --measure` and `publish` measure again)."""
    from connectome.pruning.digest_v1 import digest_v1
    from connectome.pruning.settings import PruneSettings

    where = folder / "manifest.json"
    settings, digest = manifest.get("settings"), manifest.get("settings_digest")
    if not isinstance(settings, dict) or not isinstance(digest, str):
        return f"{where} records no settings and settings_digest"
    try:
        parsed = PruneSettings.from_mapping(settings, source=f"{where}: settings")
    except ConnectomeError as e:
        return str(e)
    found = parsed.digest()
    # A run written before methods declared their own settings recorded the first rule's digest.
    if digest not in (found, digest_v1(parsed.to_dict())):
        return (f"{where}: its settings give the digest {found[:12]}..., not its settings_digest "
                f"{digest[:12]}...: they were changed after the run (or a connectome that digested "
                f"settings otherwise wrote it: prune again)")
    return None


def _check_folder(folder: Path, meta: dict, state: dict, base_state: dict, verdict: Verdict) -> None:
    problems = verdict.problems
    for name in ("mask.safetensors", "manifest.json"):
        if not (folder / name).is_file():
            problems.append(f"{folder / name} is missing")
    if problems:
        return
    try:
        mask = Mask.load(folder / "mask.safetensors")
    except Exception as e:
        problems.append(f"{folder / 'mask.safetensors'} is not a readable mask ({type(e).__name__})")
        return
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        counted = int(manifest["result"]["removed"])
    except (ValueError, KeyError, TypeError):
        problems.append(f"{folder / 'manifest.json'} is unreadable or holds no result")
        return
    wrong = _check_settings(folder, manifest)
    if wrong:
        problems.append(wrong)
    try:
        mask.check_fits(state)
        rebuilt = mask.apply(base_state)
    except Exception as e:
        problems.append(f"the mask does not fit the model: {e}")
        return
    differ = [n for n in state if not torch.equal(rebuilt[n], state[n])]
    if differ:
        problems.append(f"the model is not the mask applied to the base: {len(differ)} tensors differ, e.g. {differ[0]}")
    zeroed = sum(int((~m & (base_state[n] != 0)).sum()) for n, m in mask.items())
    counts = {"mask": zeroed, "manifest": counted, "model metadata": int(meta.get("removed", -1))}
    if len(set(counts.values())) != 1:
        problems.append("the counts of removed weights disagree: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    pattern = (manifest.get("settings") or {}).get("pattern")
    if pattern:  # the N:M property, for the layers the run pruned, once every group is full
        from connectome.pruning.pattern import Pattern
        p = Pattern.parse(pattern)
        names = p.layers({n: m.shape for n, m in mask.items()})
        bad = p.holds({n: state[n] for n in names})
        if bad and zeroed >= p.removes({n: base_state[n] for n in names}):
            problems.append(f"the {p} pattern does not hold in {len(bad)} layers, e.g. {bad[0]}")
        elif bad:
            verdict.warnings.append(f"the {p} pattern is not complete: the run stopped before every group was full")
    if manifest.get("model", {}).get("base_sha256") not in (None, meta.get("base_sha256")):
        problems.append("the manifest and the model record different base weights")
