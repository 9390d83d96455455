import torch
from torch import nn

from connectome.data.datasets import ImageTensors
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
