"""The first digest rule: how runs were named until each method declared the settings it reads.

Manifests and states written before that record a digest of this rule. `verify` recomputes a
manifest's digest from its settings to catch settings edited after the run; for those runs it must
recompute it by the rule that wrote it. Both rules are functions of the settings alone, so accepting
either still catches any edit. Frozen: nothing here changes when settings are added.
"""

import hashlib
import json

# Settings that existed then, in declaration order: name -> the value at which a setting added after
# the first runs stayed out of the digest (None: always digested where it decided the run).
_UNSET = object()
FIELDS = {
    "model": _UNSET, "remove": _UNSET, "data": _UNSET, "weights": _UNSET, "weights_file": _UNSET,
    "preprocess": [], "method": _UNSET, "score": _UNSET, "confidence": _UNSET, "include": _UNSET,
    "exclude": _UNSET, "calib_samples": _UNSET, "accept_fraction": _UNSET, "eval_samples": _UNSET,
    "batch_size": _UNSET, "step": _UNSET, "max_step": _UNSET, "min_step": _UNSET, "grow": _UNSET,
    "shrink": _UNSET, "tolerance": _UNSET, "loss_budget": _UNSET, "max_top1_drop": _UNSET,
    "label_smoothing": _UNSET, "restore_cycles": _UNSET, "restore_fraction": _UNSET, "seed": _UNSET,
    "keep_descents": False, "descent_keeps_top1": False, "unknown_last": False, "ratio_hold": 0.5,
    "headroom": False, "pace": False, "unit_share": None, "pattern": None, "learn_lr": 1e-4,
    "learn_epochs": 10.0, "learn_points": 10, "learn_select": False, "learn_check": 0.5, "learn_patience": 2,
    "learn_augment": False,
}
LEARNED_ONLY = ("learn_lr", "learn_epochs", "learn_select", "learn_check", "learn_patience", "learn_augment")
DEFAULT_SCORE = "connectome"


def digest_v1(settings: dict) -> str:
    """The first rule's digest of a prune run's settings (as `to_dict` gives them)."""
    method, score = settings["method"], settings["score"]
    learns = method == "learned"
    decides = {"score": method != "learned" or bool(settings.get("restore_cycles")),
               "learn_points": learns or method == "one-shot", **{n: learns for n in LEARNED_ONLY}}
    out = {}
    for name, unset in FIELDS.items():
        if not decides.get(name, True) or name in ("method", "score"):
            continue
        value = settings.get(name, unset)
        if value is _UNSET or (unset is not _UNSET and value == unset):
            continue
        out[name] = value
    out["criterion"] = "learned" if learns else score
    if method not in ("learned", "greedy"):
        out["method"] = method
    if learns and decides["score"] and score != DEFAULT_SCORE:
        out["score"] = score
    return hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()
