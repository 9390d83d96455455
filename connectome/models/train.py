"""Training of the reference models, regularised the way torchvision's IMAGENET1K_V2 recipe is:
label smoothing, mixup/cutmix, random crops, flips and erasing, weight decay, cosine schedule, EMA.

Such a model's plain cross-entropy is far from minimal, which is the regime in which zeroing weights
can raise accuracy (see the field notes). The EMA weights are what gets saved.
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from torchvision.transforms import v2
from tqdm.auto import tqdm

from connectome.io import save_state, write_text
from connectome.data import batches, load_dataset, subset
from connectome.data.fit import check_fit
from connectome.evaluate import evaluate
from connectome.models.load import load_model
from connectome.settings import RunSettings, setting


@dataclass
class TrainRecipe(RunSettings):
    """A reference model's training, declared once (connectome.settings): a recipe's values are checked
    by the same code as every other command's settings."""
    KIND = "train"

    model: str = setting(help="The model to train from its initialisation: a reference model (or package.module:function).")
    data: str = setting("fashion-mnist", "Data spec.")
    epochs: int = setting(30, "Epochs.", minimum=1)
    batch_size: int = setting(128, "Batch size.", minimum=1)
    lr: float = setting(0.1, "Peak learning rate (SGD, Nesterov momentum).", above=0)
    momentum: float = setting(0.9, "SGD momentum.", minimum=0, below=1)
    weight_decay: float = setting(5e-5, "Weight decay, on weights of two or more dimensions only.", minimum=0)
    warmup_epochs: int = setting(1, "Linear warmup before the cosine schedule.", minimum=0)
    label_smoothing: float = setting(0.1, "Of the training loss.", minimum=0, below=1)
    mixup_alpha: float = setting(0.2, "Mixup's alpha; 0 disables.", minimum=0)
    cutmix_alpha: float = setting(1.0, "CutMix's alpha; 0 disables.", minimum=0)
    mix_prob: float = setting(1.0, "Share of batches that get mixup or cutmix.", minimum=0, maximum=1)
    crop_padding: int = setting(2, "Random translation by up to this many pixels; 0 disables.", minimum=0)
    hflip: bool = setting(True, "Random horizontal flips.")
    erasing_prob: float = setting(0.1, "Random erasing's probability.", minimum=0, maximum=1)
    ema_decay: float = setting(0.999, "EMA of the weights; 0 disables.", minimum=0, below=1)
    val_samples: int = setting(5000, "Held out of the training split, for reporting while training.", minimum=1)
    seed: int = setting(0, "Seed of the initialisation, the held-out split and the augmentations.", minimum=0)
    threads: int = setting(0, "torch threads; 0 leaves torch's default.", minimum=0, runtime=True)


def ema_with_warmup(decay: float):
    """EMA whose decay ramps up as (1+n)/(10+n) (as timm's ModelEma does): a fixed decay keeps a share of
    the random initialisation for thousands of steps, and with BatchNorm that mixture predicts one class."""
    def avg_fn(averaged, current, n):
        d = min(decay, (1 + n.item() if torch.is_tensor(n) else 1 + n) / (10 + (n.item() if torch.is_tensor(n) else n)))
        return averaged + (current - averaged) * (1 - d)
    return avg_fn


def augment(x: torch.Tensor, recipe: TrainRecipe, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random translation, flip and erasing on an in-memory batch."""
    n, _, h, w = x.shape
    p = recipe.crop_padding
    if p:
        padded = F.pad(x, (p, p, p, p))
        dy, dx = torch.randint(0, 2 * p + 1, (2, n), generator=gen)
        rows = (torch.arange(h)[None, :] + dy[:, None])  # (n, h)
        cols = (torch.arange(w)[None, :] + dx[:, None])  # (n, w)
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]
    if recipe.hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if recipe.erasing_prob:
        erase = v2.RandomErasing(p=recipe.erasing_prob, value=0)
        x = torch.stack([erase(img) for img in x])
    return x


def train(recipe: TrainRecipe, out: Path, device: str = "cpu", progress: bool = True) -> dict:
    torch.manual_seed(recipe.seed)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    gen = torch.Generator().manual_seed(recipe.seed)
    model = load_model(recipe.model, pretrained=False).module.to(device)
    splits = load_dataset(recipe.data)
    check_fit(model, splits.train, splits.num_classes, recipe.data, recipe.model, device)  # one sample, before any epoch
    train_set = subset(splits.train, len(splits.train) - recipe.val_samples, recipe.seed, skip=recipe.val_samples)
    val_set = subset(splits.train, recipe.val_samples, recipe.seed)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases and norms
    opt = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr,
                          momentum=recipe.momentum, nesterov=True)
    steps_per_epoch = -(-len(train_set) // recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    warm = recipe.warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warm)) * 0.5 * (
        1 + torch.cos(torch.tensor(torch.pi * min(s, total) / total)).item()))
    ema = AveragedModel(model, avg_fn=ema_with_warmup(recipe.ema_decay), use_buffers=True) \
        if recipe.ema_decay else None
    mixers = [m for m in (v2.MixUp(alpha=recipe.mixup_alpha, num_classes=splits.num_classes) if recipe.mixup_alpha else None,
                          v2.CutMix(alpha=recipe.cutmix_alpha, num_classes=splits.num_classes) if recipe.cutmix_alpha else None) if m]
    mix = v2.RandomChoice(mixers) if mixers else None

    history, start = [], time.time()
    for epoch in range(recipe.epochs):
        model.train()
        bar = tqdm(batches(train_set, recipe.batch_size, shuffle=True, seed=recipe.seed * 1000 + epoch),
                   total=steps_per_epoch, desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=not progress, leave=False)
        for x, y in bar:
            x = augment(x, recipe, gen)
            target = F.one_hot(y, splits.num_classes).float()
            if mix is not None and torch.rand((), generator=gen) < recipe.mix_prob:
                x, target = mix(x, y)
            x, target = x.to(device), target.to(device)
            loss = F.cross_entropy(model(x), target, label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        val = evaluate(ema.module if ema is not None else model, val_set, device=device)
        raw = evaluate(model, val_set, device=device) if ema is not None else val
        history.append({"epoch": epoch + 1, "seconds": round(time.time() - start, 1), **val.as_dict("val_"),
                        "raw_val_top1": raw.top1})
        print(f"epoch {epoch + 1}: val {val}  (without EMA: {raw.top1:.2f}%)", flush=True)

    final = (ema.module if ema is not None else model).cpu().eval()
    if ema is not None and raw.top1 > val.top1:  # keep the EMA only where it helps (validation split)
        final = model.cpu().eval()
    test = evaluate(final, splits.test)
    out.mkdir(parents=True, exist_ok=True)
    save_state(out / f"{recipe.model}.safetensors", final.state_dict(),
               {"recipe": json.dumps(asdict(recipe)), "test_top1": f"{test.top1:.2f}"})
    report = {"recipe": asdict(recipe), "test": test.as_dict(), "history": history,
              "seconds": round(time.time() - start, 1)}
    write_text(out / f"{recipe.model}.train.json", json.dumps(report, indent=2))
    return report


RECIPE_KEYS = {s.name for s in TrainRecipe.specs()}
