"""N:M speed check: inference of a 2:4 model on sparse tensor cores against the same model dense.

A 2:4 mask is worth its accuracy cost only where it runs faster: on NVIDIA GPUs from Ampere on, through
PyTorch's semi-structured sparse tensors (cuSPARSELt, or CUTLASS). This masks every eligible nn.Linear
2:4 by magnitude (connectome.pruning.pattern: the same groups `--pattern 2:4` uses), then times

  (a) one GEMM, a 4096x4096 half-precision weight against 4096 x batch activations, dense and 2:4;
  (b) a whole model's forward (default torchvision vit_b_16, random weights: speed does not depend on
      their values), with the masked weights as ordinary dense tensors and as semi-structured ones;

and checks that the sparse model computes what the masked dense one does. Only linear layers are
converted (convolutions have no semi-structured kernel), so convolutional networks gain little.

    python bench/speed_nm.py --device cuda                      # writes bench/results/speed-nm-cuda.json
    python bench/speed_nm.py --dry-run                          # CPU: the layers that would be converted

Without a CUDA GPU of compute capability 8.0 or more it says so in one line and exits with 2.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from connectome.pruning.pattern import Pattern  # noqa: E402

TWO_FOUR = Pattern(2, 4)
MULTIPLE = 64  # both weight dimensions a multiple of 64: accepted by cuSPARSELt and CUTLASS in fp16/bf16


def convertible(module: nn.Module) -> bool:
    # Exactly nn.Linear: the attention block's out_proj (a subclass) is read by a fused kernel, not F.linear.
    return (type(module) is nn.Linear and module.weight.shape[0] % MULTIPLE == 0
            and module.weight.shape[1] % MULTIPLE == 0)


@torch.no_grad()
def apply_2_4(model: nn.Module) -> list[str]:
    """Zero the 2 smallest-magnitude weights of every 4 consecutive inputs of each convertible linear
    layer; the names of those layers. Every other weight keeps its value."""
    names = []
    for name, module in model.named_modules():
        if convertible(module):
            w = module.weight
            groups = w.reshape(-1, 4)
            keep = torch.ones_like(groups, dtype=torch.bool).scatter_(1, groups.abs().argsort(1)[:, :2], False)
            w.mul_(keep.view_as(w).to(w.dtype))
            names.append(name)
    assert TWO_FOUR.holds({n: dict(model.named_modules())[n].weight for n in names}) == []
    return names


def build(name: str) -> nn.Module:
    import torchvision
    return getattr(torchvision.models, name)(weights=None).eval()


def timed(fn, repeats: int) -> float:
    """Median milliseconds of fn() on the GPU, after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gemm(dtype: torch.dtype, batch: int, repeats: int) -> dict:
    from torch.sparse import to_sparse_semi_structured
    torch.manual_seed(0)
    layer = nn.Linear(4096, 4096, bias=False).to("cuda", dtype)
    apply_2_4(layer)
    x = torch.randn(batch, 4096, device="cuda", dtype=dtype)
    dense = timed(lambda: F.linear(x, layer.weight), repeats)
    sparse_w = to_sparse_semi_structured(layer.weight)
    sparse = timed(lambda: F.linear(x, sparse_w), repeats)
    err = (F.linear(x, sparse_w) - F.linear(x, layer.weight)).abs().max().item()
    return {"shape": [4096, 4096], "batch": batch, "dense_ms": dense, "sparse_ms": sparse, "speedup": dense / sparse,
            "max_abs_diff": err}


def whole_model(name: str, dtype: torch.dtype, batch: int, repeats: int) -> dict:
    from torch.sparse import to_sparse_semi_structured
    torch.manual_seed(0)
    model = build(name).to("cuda", dtype)
    names = apply_2_4(model)
    total = sum(p.numel() for p in model.parameters())
    converted = sum(dict(model.named_modules())[n].weight.numel() for n in names)
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)
    with torch.inference_mode():
        reference = model(x).float()
        dense = timed(lambda: model(x), repeats)
    for n in names:
        module = dict(model.named_modules())[n]
        module.weight = nn.Parameter(to_sparse_semi_structured(module.weight), requires_grad=False)
    with torch.inference_mode():
        out = model(x).float()
        sparse = timed(lambda: model(x), repeats)
    err = (out - reference).abs().max().item()
    scale = reference.abs().max().item()
    # Half precision sums in another order: differences of about 1e-2 of the outputs' scale are rounding.
    assert err <= 2e-2 * max(scale, 1.0), f"the 2:4 model disagrees with the masked dense one: {err} (scale {scale})"
    return {"model": name, "batch": batch, "layers_converted": len(names), "parameters": total,
            "parameters_converted": converted, "share_converted": converted / total, "dense_ms": dense,
            "sparse_ms": sparse, "speedup": dense / sparse, "max_abs_diff": err, "output_scale": scale}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="vit_b_16", help="torchvision names, comma-separated.")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--dry-run", action="store_true", help="On the CPU: list the layers that would be converted.")
    args = ap.parse_args()
    if args.dry_run:
        for name in args.models.split(","):
            model = build(name)
            total = sum(p.numel() for p in model.parameters())
            names = apply_2_4(model)
            converted = sum(dict(model.named_modules())[n].weight.numel() for n in names)
            print(f"{name}: {len(names)} linear layers converted, {converted:,} of {total:,} parameters "
                  f"({100 * converted / total:.1f}%)")
        return
    if not (args.device.startswith("cuda") and torch.cuda.is_available()
            and torch.cuda.get_device_capability() >= (8, 0)):
        print("the N:M speed check needs a CUDA GPU with sparse tensor cores (compute capability 8.0 or more)",
              file=sys.stderr)
        sys.exit(2)
    dtype = getattr(torch, args.dtype)
    result = {"provenance": provenance(), "dtype": args.dtype,
              "gemm": [gemm(dtype, b, args.repeats) for b in (512, 4096, 16384)],
              "models": [whole_model(n, dtype, args.batch, args.repeats) for n in args.models.split(",")]}
    for g in result["gemm"]:
        print(f"GEMM 4096x4096 x {g['batch']:>5}: dense {g['dense_ms']:.3f} ms, 2:4 {g['sparse_ms']:.3f} ms, "
              f"{g['speedup']:.2f}x")
    for m in result["models"]:
        print(f"{m['model']} batch {m['batch']}: {m['layers_converted']} layers ({100 * m['share_converted']:.0f}% of "
              f"the parameters) 2:4; dense {m['dense_ms']:.2f} ms, 2:4 {m['sparse_ms']:.2f} ms, {m['speedup']:.2f}x")
    out = ROOT / "bench" / "results" / "speed-nm-cuda.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
