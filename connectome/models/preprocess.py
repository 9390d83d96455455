"""A model's eval preprocessing as a timm data config (input_size, interpolation, mean, std, crop_pct,
crop_mode), resolved and built by timm's own `resolve_data_config` and `create_transform`.

A module declares its preprocessing the timm way, with a `pretrained_cfg` (or `default_cfg`) dict
on it, as timm's models carry; a user's builder may set one. A module that declares none gets
IMAGENET_EVAL, torchvision's ImageNet eval: resize the short side to 256 (bilinear), center crop 224,
ImageNet mean and std. An override (`preprocess`, some of those keys) beats both.
"""

import dataclasses
import math

from connectome.errors import ConnectomeError

# torchvision's ImageNet eval preset (resize 256, crop 224) as timm states it: crop_pct = 224/256.
IMAGENET_EVAL = {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
                 "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")  # timm's str_to_interp_mode
CROP_MODES = ("center", "squash", "border")
KEYS = tuple(IMAGENET_EVAL)


def declared_config(module) -> dict | None:
    """The module's own `pretrained_cfg` or `default_cfg` (a dict or timm's PretrainedCfg), or None."""
    for name in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(module, name, None)
        if dataclasses.is_dataclass(cfg):
            cfg = dataclasses.asdict(cfg)
        if isinstance(cfg, dict) and cfg:
            return dict(cfg)
    return None


def _numbers(key: str, value, count: tuple[int, ...], kind=float, positive: bool = True) -> tuple:
    """A number, a list of them, or a string of them separated by commas (or x, /: `3x224x224`)."""
    items = [value] if isinstance(value, (int, float)) else value
    if isinstance(items, str):
        items = items.replace("x", ",").replace("/", ",").split(",")
    try:
        out = tuple(None if isinstance(v, bool) else kind(v) for v in items)
        ok = None not in out and len(out) in count and all(math.isfinite(v) and (v > 0 or not positive) for v in out)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        what = ("a " if count == (1,) else " or ".join(map(str, count)) + " ") + ("positive " if positive else "")
        what += "number" if count == (1,) else "numbers"
        raise ConnectomeError(f"preprocess {key}: wants {what}, got {value!r}")
    return out


def check_preprocess(values: dict | list | str | None) -> dict:
    """An override as timm's data-config keys, checked; one line naming the key when wrong. Takes a dict,
    or "key=value" strings (a list, or one string with spaces or semicolons between them); list items
    without "=" continue the previous value, so `mean=0.5,0.5,0.5` survives a flag split at commas."""
    if not values:
        return {}
    if isinstance(values, str):
        values = values.replace(";", " ").split()
    if isinstance(values, (list, tuple)):
        pairs: dict = {}
        last = None
        for item in map(str, values):
            key, eq, value = item.partition("=")
            if eq:
                last, pairs[key.strip()] = key.strip(), value.strip()
            elif last is not None:
                pairs[last] += "," + item.strip()
            else:
                raise ConnectomeError(f"preprocess: {item!r} is not KEY=VALUE (keys: {', '.join(KEYS)})")
        values = pairs
    if not isinstance(values, dict):
        raise ConnectomeError(f"preprocess: wants a mapping of {', '.join(KEYS)}")
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConnectomeError(f"preprocess: unknown key {', '.join(map(repr, unknown))}; the keys are {', '.join(KEYS)}")
    out = {}
    for key, value in values.items():
        if key == "input_size":
            size = _numbers(key, value, (1, 2, 3), int)
            out[key] = (3, size[0], size[0]) if len(size) == 1 else (3, *size) if len(size) == 2 else size
        elif key in ("mean", "std"):
            out[key] = _numbers(key, value, (1, 3), positive=key == "std")
        elif key == "crop_pct":
            (pct,) = _numbers(key, value, (1,))
            if pct > 1:
                raise ConnectomeError(f"preprocess crop_pct: wants a share in (0, 1], got {value!r}")
            out[key] = pct
        else:
            choices = INTERPOLATIONS if key == "interpolation" else CROP_MODES
            if value not in choices:
                raise ConnectomeError(f"preprocess {key}: must be one of {', '.join(choices)}, got {value!r}")
            out[key] = value
    return out


def data_config(module=None, preprocess: dict | list | str | None = None, base: dict | None = None) -> dict:
    """The data config an image model is evaluated with: `preprocess` over `base` (a config its source
    already chose, e.g. a torchvision preset's), else over the module's declared config, else over
    IMAGENET_EVAL."""
    from timm.data import resolve_data_config

    cfg = base or declared_config(module) or IMAGENET_EVAL
    try:
        return resolve_data_config(args=check_preprocess(preprocess), pretrained_cfg=cfg)
    except AssertionError:  # timm asserts that mean and std have one value or one per input channel
        raise ConnectomeError(f"preprocess: mean and std want 1 value or one per channel of input_size "
                              f"{cfg.get('input_size')}") from None


def eval_transform(config: dict):
    """timm's eval transform for a data config: resize, crop, to tensor, normalize."""
    from timm.data import create_transform

    return create_transform(**{k: config[k] for k in KEYS if k in config}, is_training=False)


def preset_config(preset) -> dict:
    """torchvision's ImageClassification preset (weights.transforms()) as a timm data config."""
    crop, resize = preset.crop_size[0], preset.resize_size[0]
    pct = crop / resize
    while math.floor(crop / pct) > resize:  # timm resizes to floor(crop / crop_pct): make it land on `resize`
        pct = math.nextafter(pct, 2.0)
    while math.floor(crop / pct) < resize:
        pct = math.nextafter(pct, 0.0)
    return {"input_size": (3, crop, crop), "interpolation": preset.interpolation.value, "mean": tuple(preset.mean),
            "std": tuple(preset.std), "crop_pct": pct, "crop_mode": "center"}
