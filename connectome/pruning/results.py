"""A finished run's folder: the model (safetensors that load straight into the architecture), the
mask, the curve as CSV and PNG, the full step log and a manifest of settings, versions and results."""

import json
from dataclasses import asdict

import torch

from connectome.io import save_state, strict_json, write_text


def write_results(run, command: str, extra_manifest: dict | None = None) -> dict:
    """The run folder: model, mask, curve (CSV, PNG), steps log and manifest."""
    from connectome import __version__
    from connectome.pruning import curves
    import numpy, safetensors, timm, torchvision

    setup, s, out = run.setup, run.s, run.out
    mask = run.flat.to_mask()
    model = setup.loaded.module
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    removed = run.flat.removed()
    meta = {"base_model": s.model, "base_weights": setup.loaded.weights, "base_sha256": setup.base_sha256,
            "removed": str(removed), "prunable": str(run.prunable), "criterion": s.recorded(),
            "format": "connectome.model/1"}
    save_state(out / "model.safetensors", state, meta)
    mask.save(out / "mask.safetensors", meta)
    accepted = [r for r in run.log if r["accepted"]]
    curves.write_csv(out / "curve.csv", accepted)
    write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in run.log))
    title = f"{s.model} · {s.label()} · {removed:,} of {run.prunable:,} prunable weights removed"
    curves.plot(out / "curve.png", accepted, title, run.prunable)
    final = next(r for r in reversed(accepted) if r.get("eval_top1") is not None)
    dense = accepted[0]
    manifest = {
        "command": command, "settings": asdict(s), "settings_digest": s.digest(),
        "model": {"spec": s.model, "weights": setup.loaded.weights, "base_sha256": setup.base_sha256, **setup.loaded.meta},
        "data": {"spec": s.data or setup.loaded.dataset, "decision_samples": len(setup.decision),
                 "accept_samples": len(setup.accept), "eval_samples": len(setup.evaluation)},
        "result": {"removed": removed, "prunable": run.prunable, "target": setup.target,
                   "pre_existing_zeros": int((run.flat.base == 0).sum()),
                   "steps": len(run.log), "accepted_steps": len(accepted) - 1,
                   "dense": {k: dense.get(f"eval_{k}") for k in ("top1", "top5", "loss")},
                   "final": {k: final.get(f"eval_{k}") for k in ("top1", "top5", "loss")},
                   "seconds": round(run.elapsed, 1)},
        "versions": {"connectome": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "timm": timm.__version__, "safetensors": safetensors.__version__, "numpy": numpy.__version__},
        "device": setup.device, **(extra_manifest or {}),
    }
    write_text(out / "manifest.json", json.dumps(strict_json(manifest), indent=2, allow_nan=False))
    return manifest
