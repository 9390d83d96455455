import torch
from torch import nn

from connectome.data import ImageTensors
from connectome.pruning.statistics import collect


def test_matches_exact_per_sample_moments():
    """The batch-variance estimator against per-sample gradients computed one sample at a time."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.Tanh(), nn.Linear(5, 3)).eval()
    n = 2048
    images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 3, (n,))
    data = ImageTensors(images, labels)
    params = {"1.weight": model[1].weight, "3.weight": model[3].weight}
    stats = collect(model, params, data, batch_size=32)

    x = images.float() / 255
    per_sample = {k: [] for k in params}
    for i in range(n):
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), labels[i:i + 1])
        for k, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            per_sample[k].append(g)
    for k in params:
        g = torch.stack(per_sample[k]).double()
        mean, second = g.mean(0), (g * g).mean(0)
        assert torch.allclose(stats.grad[k].double(), mean, atol=1e-6)
        # A squared mini-batch gradient would be ~32x too small; the estimate is within sampling error.
        rel = (stats.second[k].double().sum() - second.sum()).abs() / second.sum()
        assert rel < 0.15, rel
        naive = sum((g[j:j + 32].mean(0) ** 2) for j in range(0, n, 32)) / (n // 32)
        assert naive.sum() < 0.2 * second.sum()


def test_deterministic_and_leaves_requires_grad():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    data = ImageTensors(torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8), torch.randint(0, 3, (64,)))
    p = {"1.weight": model[1].weight}
    a, b = collect(model, p, data, 16), collect(model, p, data, 16)
    assert torch.equal(a.grad["1.weight"], b.grad["1.weight"]) and torch.equal(a.second["1.weight"], b.second["1.weight"])
    assert all(q.requires_grad for q in model.parameters()) and model[1].weight.grad is None


def test_channels_last_and_compile_give_the_same_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.Flatten(), nn.Linear(36, 3))
    data = ImageTensors(torch.randint(0, 256, (96, 1, 10, 10), dtype=torch.uint8), torch.randint(0, 3, (96,)))
    params = {"0.weight": model[0].weight, "2.weight": model[2].weight, "4.weight": model[4].weight}
    ref = collect(model, params, data, 16)
    model.to(memory_format=torch.channels_last)  # the same Parameter objects, other strides
    assert model[2].weight is params["2.weight"] and params["2.weight"].is_contiguous(memory_format=torch.channels_last)
    fast = collect(torch.compile(model, backend="aot_eager"), params, data, 16, channels_last=True)
    for k in params:
        assert fast.grad[k].shape == params[k].shape
        assert torch.allclose(fast.grad[k], ref.grad[k], rtol=1e-4, atol=1e-7)
        assert torch.allclose(fast.second[k], ref.second[k], rtol=1e-4, atol=1e-9)
    assert abs(fast.loss - ref.loss) < 1e-6 and fast.samples == 96


def _reference_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, groups=4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(36, 3))
    data = ImageTensors(torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8), torch.randint(0, 3, (96,)))
    params = {"0.weight": model[0].weight, "2.weight": model[2].weight, "5.weight": model[5].weight}
    return model, params, data


# Computed by collect before input norms existed (same seed, network and data): sums of |.| per tensor.
BEFORE = {"grad": {"0.weight": 0.032114821756749734, "2.weight": 0.12897360579881934, "5.weight": 0.12113046734646105},
          "second": {"0.weight": 0.006979286039066501, "2.weight": 0.1367848796255089,
                     "5.weight": 0.026812545321780235},
          "variance": {"0.weight": 0.006970326915987535, "2.weight": 0.13639892856087954,
                       "5.weight": 0.026686396136545554}}


def test_input_norms_leave_the_statistics_unchanged():
    """Off: the values of the code before input norms; on: the same statistics to the bit."""
    model, params, data = _reference_net()
    off = collect(model, params, data, 16)
    on = collect(model, params, data, 16, input_norms=True)
    assert off.input_norm is None and set(on.input_norm) == set(params)
    for field, sums in BEFORE.items():
        for k, before in sums.items():
            assert abs(getattr(off, field)[k].double().abs().sum().item() - before) <= 1e-6 * before, (field, k)
            assert torch.equal(getattr(off, field)[k], getattr(on, field)[k]), (field, k)
    assert abs(off.loss - 1.077342430750529) < 1e-6 and off.top1 == 36.458333333333336
    assert (off.loss, off.top1, off.samples) == (on.loss, on.top1, on.samples)
    assert not any(m._forward_pre_hooks for m in model.modules())  # the hooks are gone


def _inputs_of(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every layer of a Sequential, computed layer by layer."""
    out = []
    with torch.no_grad():
        for layer in model:
            out.append(x)
            x = layer(x)
    return out


def test_input_norms_of_linear_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.Tanh(), nn.Linear(5, 3)).eval()
    images = torch.randint(0, 256, (100, 1, 4, 4), dtype=torch.uint8)
    data = ImageTensors(images, torch.randint(0, 3, (100,)))
    params = {"3.weight": model[3].weight, "1.weight": model[1].weight}  # not in the modules' order
    stats = collect(model, params, data, batch_size=32, input_norms=True)  # 4 batches, the last of 4
    inputs = _inputs_of(model, images.float() / 255)
    for k, i in (("1.weight", 1), ("3.weight", 3)):
        x = inputs[i].double()
        expected = (x.square().sum(0) / len(x)).sqrt()  # ||X_j|| / sqrt(samples), per input feature j
        assert stats.input_norm[k].shape == params[k].shape and stats.input_norm[k].dtype == torch.float32
        for row in stats.input_norm[k]:  # the same for every output unit
            assert torch.allclose(row.double(), expected, rtol=1e-6)


def test_input_norms_of_convolutions_per_tap_and_group():
    """Against the unfolded input patches: weight (o, c, i, j) sees row (g*in/groups + c, i, j) of the
    unfolded input, g the group of output channel o; a depthwise conv's channel o its own input channel."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6), nn.ReLU(),  # depthwise, strided
        nn.Conv2d(6, 4, (3, 2), padding=(2, 1), dilation=(2, 1), groups=2, padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 4 * 5, 3)).eval()
    images = torch.randint(0, 256, (40, 2, 7, 7), dtype=torch.uint8)
    data = ImageTensors(images, torch.randint(0, 3, (40,)))
    params = {f"{i}.weight": model[i].weight for i in (0, 2, 4, 6, 8)}
    stats = collect(model, params, data, batch_size=16, input_norms=True)
    inputs = _inputs_of(model, images.float() / 255)
    for i in (0, 2, 4, 6):
        conv, x = model[i], inputs[i].double()
        if conv.padding_mode != "zeros":
            x = nn.functional.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
            padding = 0
        else:
            padding = conv.padding
        cols = nn.functional.unfold(x, conv.kernel_size, conv.dilation, padding, conv.stride)  # [B, C*kh*kw, L]
        per_tap = (cols.square().sum((0, 2)) / len(x)).sqrt().view(conv.in_channels, *conv.kernel_size)
        cin, cout = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        got = stats.input_norm[f"{i}.weight"]
        assert got.shape == conv.weight.shape
        for o in range(conv.out_channels):
            g = o // cout
            assert torch.allclose(got[o].double(), per_tap[g * cin:(g + 1) * cin], rtol=1e-6), (i, o)
    depthwise = stats.input_norm["2.weight"]
    assert not torch.equal(depthwise[0], depthwise[1])  # each channel its own input
    # Per tap, not per channel: the zero padding and the stride give the border taps fewer inputs.
    assert not torch.allclose(depthwise[0, 0, 0, 0], depthwise[0, 0, 1, 1], rtol=1e-3)


def test_input_norms_through_a_compiled_wrapper():
    """Hooks added after compilation are not run by compiled code: the module runs uncompiled instead."""
    model, params, data = _reference_net()
    ref = collect(model, params, data, 16, input_norms=True)
    compiled = torch.compile(model, backend="aot_eager")
    collect(compiled, params, data, 16)  # compiled for this pass before any hook exists
    for _ in range(2):  # and a second pass must not reuse the first one's hooks
        fast = collect(compiled, params, data, 16, input_norms=True)
        for k in params:
            assert torch.equal(fast.input_norm[k], ref.input_norm[k]) and fast.input_norm[k].abs().sum() > 0


def _distributed_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model, params, data = _reference_net()
    stats = collect(model, params, data, 16, input_norms=True)  # 6 batches: 3 per rank
    torch.save(stats.input_norm, f"{out_dir}/norms{rank}.pt")
    dist.destroy_process_group()


def test_input_norms_are_all_reduced(tmp_path):
    """Under torch.distributed (gloo, 2 processes) every rank ends with the single-process norms."""
    import torch.multiprocessing as mp
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    model, params, data = _reference_net()
    ref = collect(model, params, data, 16, input_norms=True).input_norm
    for rank in range(2):
        got = torch.load(tmp_path / f"norms{rank}.pt")
        for k in params:
            assert torch.allclose(got[k], ref[k], rtol=1e-6), (rank, k)


def test_input_norms_refuse_a_module_that_never_runs():
    """nn.MultiheadAttention multiplies by out_proj.weight without calling out_proj: its input is never
    seen, and norms of zero would call those weights free."""
    import pytest

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            x = x.flatten(2).transpose(1, 2)  # [B, 16 positions, 4 channels]
            return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))

    torch.manual_seed(0)
    model = Attention()
    data = ImageTensors(torch.randint(0, 256, (32, 4, 4, 4), dtype=torch.uint8), torch.randint(0, 3, (32,)))
    params = {"attn.out_proj.weight": model.attn.out_proj.weight, "head.weight": model.head.weight}
    assert collect(model, params, data, 16).input_norm is None  # without input norms, as before
    with pytest.raises(ValueError, match="attn.out_proj.weight never ran"):
        collect(model, params, data, 16, input_norms=True)
    head = collect(model, {"head.weight": model.head.weight}, data, 16, input_norms=True)
    assert head.input_norm["head.weight"].gt(0).all()
