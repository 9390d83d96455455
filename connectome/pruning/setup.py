"""What a pruning run works on, resolved once from its settings before anything is written: the
model and its prunable weights, the three data splits, the exact target count, and how to compute
(device, precision, memory format) without changing any decision."""

from dataclasses import dataclass

import torch

from connectome.data import Splits, default_workers, labels_of, load_dataset, subset
from connectome.data.fit import check_fit
from connectome.errors import ConnectomeError
from connectome.models.files import check_exact, read_state_file
from connectome.models.load import LoadedModel, load_model, state_sha256
from connectome.pruning.flat import FlatWeights, prunable_parameters
from connectome.pruning.pattern import Pattern
from connectome.pruning.settings import PruneSettings
from connectome.sizes import parse_count


@dataclass
class Setup:
    """What a run works on, resolved once from the settings."""
    settings: PruneSettings
    loaded: LoadedModel
    splits: Splits
    flat: FlatWeights
    target: int
    decision: object  # training samples the statistics are computed on
    accept: object  # held-out training samples that accept or reject a step
    evaluation: object  # the reported split: never used for a decision
    base_state: dict
    base_sha256: str
    device: str
    pattern: Pattern | None = None  # N:M: how many weights each group may lose
    present: torch.Tensor | None = None  # the classes the evaluation split holds, where it holds fewer than all

    def classes_of(self, dataset) -> torch.Tensor | None:
        """What `evaluate(classes=...)` takes for `dataset`: the present classes for the evaluation split."""
        return self.present if dataset is self.evaluation else None


@dataclass
class Runtime:
    """How passes are computed; none of it changes a decision. `compile`: True for torch.compile's
    default backend, a string for another. `workers`: DataLoader workers for image folders (None:
    a share of the cores)."""
    device: str = "cpu"
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool | str = False
    workers: int | None = None
    progress: bool = True

    @classmethod
    def of(cls, s: PruneSettings, device: str, progress: bool = True, convolutional: bool = False) -> "Runtime":
        """channels_last by default on a GPU, and on a CPU for networks with convolutions: there it
        doubled EfficientNet-Lite0's forward throughput (10.9 -> 22.0 images/s on one core)."""
        cuda = device.startswith("cuda")
        return cls(device=device, autocast_dtype=torch.bfloat16 if s.amp and cuda else None,
                   channels_last=s.channels_last if s.channels_last is not None else cuda or convolutional,
                   compile=s.compile, workers=s.workers, progress=progress)

    @staticmethod
    def convolutional(setup: "Setup") -> bool:
        return any(p.dim() == 4 for p in setup.flat.params.values())

    def workers_for(self, dataset) -> int:
        return default_workers(dataset) if self.workers is None else self.workers


def prepare(s: PruneSettings, device: str = "cpu") -> Setup:
    """Load and check everything a run needs before anything is written."""
    loaded = load_model(s.model, weights=s.weights, weights_file=s.weights_file, preprocess=s.preprocess or None)
    data = s.data or loaded.dataset
    if not data:
        raise ConnectomeError(f"--data is required for {s.model} (e.g. imagenet:/path/to/imagenet)")
    splits = load_dataset(data, loaded.transforms)
    n_accept = max(2, int(round(s.calib_samples * s.accept_fraction)))
    n_decide = s.calib_samples - n_accept
    if s.calib_samples > len(splits.train):
        raise ConnectomeError(f"--calib-samples {s.calib_samples:,} exceeds the {len(splits.train):,} training samples")
    if n_decide < 2:
        raise ConnectomeError("too few calibration samples for statistics")
    if s.eval_samples and s.eval_samples > len(splits.test):
        raise ConnectomeError(f"--eval-samples {s.eval_samples:,} exceeds the {len(splits.test):,} evaluation samples")
    if s.weights_file:  # the base must be the file's weights exactly, whatever float type the file holds
        check_exact(loaded.module, read_state_file(s.weights_file), s.weights_file)
    model = loaded.module.to(device).eval()
    check_fit(model, splits.test, splits.num_classes, data, s.model, device)  # one sample, before any pass
    params = prunable_parameters(model, s.include, s.exclude)
    if not params:
        raise ConnectomeError("no prunable parameters: check --include/--exclude patterns")
    flat = FlatWeights(params)
    pattern = Pattern.parse(s.pattern) if s.pattern else None
    if pattern:
        pattern.restrict(flat)
        if not flat.prunable():
            raise ConnectomeError(f"no prunable layer has rows that divide into groups of {pattern.m} for the "
                                  f"{pattern} pattern")
    target = parse_count(s.remove, flat.prunable())
    if pattern:
        full, text = pattern.capacity(flat), s.remove.strip()
        if text.endswith("%") and float(text[:-1]) == 100 * (pattern.m - pattern.n) / pattern.m:
            target = full  # "50%" of 2:4 is the full pattern, where the base's own zeros leave fewer
    if pattern and target > full:
        raise ConnectomeError(f"--remove {s.remove} ({target:,}) is more than the {pattern} pattern removes "
                              f"({full:,}, {100 * full / flat.prunable():.1f}% of the {flat.prunable():,} weights in "
                              f"its layers)")
    if s.decides("learn_points") and s.learn_points > max(1, target):  # a count removes one weight at least
        raise ConnectomeError(f"--learn-points {s.learn_points:,} is more than the {target:,} weights to remove")
    base_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    evaluation = subset(splits.test, s.eval_samples, s.seed) if s.eval_samples else splits.test
    present = labels_of(evaluation).unique()
    return Setup(
        settings=s, loaded=loaded, splits=splits, flat=flat, target=target,
        decision=subset(splits.train, n_decide, s.seed),
        accept=subset(splits.train, n_accept, s.seed, skip=n_decide),
        evaluation=evaluation, base_state=base_state, base_sha256=state_sha256(base_state), device=device,
        pattern=pattern, present=present if len(present) < splits.num_classes else None)
