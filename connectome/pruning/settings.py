"""The settings of `prune` and `compare`, each declared once (see connectome.settings).

Defaults were chosen by measurement on the reference models; those marked "(no effect)" are off at
their default. Runtime settings change no decision: a run may resume with other values.

Which settings decide a run is said by the parts that read them, not here: a method declares the
settings it reads (connectome.pruning.methods.base.RunFolder.settings), and a score its options
(connectome.pruning.scores.Score.settings). A run's digest holds the common settings (those no part
declares) and its parts' own: its method's, the restoring method's where it has restore cycles, and
its score's where one of them ranks by it.
"""

import dataclasses
import os
from dataclasses import dataclass

from connectome.errors import ConnectomeError
from connectome.pruning.registry import METHODS
from connectome.settings import RunSettings, setting
from connectome.sizes import parse_count


def _scores() -> list[str]:
    from connectome.pruning.scores import REGISTRY
    return list(REGISTRY)


def _score_class(name: str):
    from connectome.pruning.scores import REGISTRY
    return REGISTRY[name]


def _methods() -> list[str]:
    return list(METHODS)


def _owned() -> set[str]:
    """The settings some method or score declares: the others are common to every run."""
    from connectome.pruning.scores import REGISTRY
    return {n for part in [*METHODS.values(), *REGISTRY.values()] for n in part.settings}


def _criteria() -> list[str]:
    """What --criterion took before methods and scores were apart: a score, or learned."""
    return ["learned", *_scores()]


def _compared() -> list[str]:
    """compare's names: a method, METHOD:SCORE, or a criterion as --criterion took it."""
    return [*_methods(), *(f"{m}:{s}" for m in _methods() if METHODS[m].ranks for s in _scores()), *_criteria()]


def split_criterion(name: str, in_compare: bool = False) -> tuple[str, str | None]:
    """(method, score) of a criterion name as --criterion took it: learned is a method; a score ran the
    greedy loop in `prune`, and one-shot in `compare` except connectome, which compare ran as the loop."""
    if name == "learned":
        return "learned", None
    if in_compare and name != "connectome":
        return "one-shot", name
    return "greedy", name


def split_compared(name: str) -> tuple[str, str | None]:
    """(method, score) of one of compare's --methods (a bare greedy or one-shot takes the default score)."""
    if ":" in name:
        method, score = name.split(":", 1)
        return method, score
    if name in _methods():
        return name, PruneSettings.score_default() if METHODS[name].ranks else None
    return split_criterion(name, in_compare=True)


@dataclass
class PruneSettings(RunSettings):
    """Every hyperparameter of a pruning run."""
    KIND = "prune"

    model: str = setting(help="torchvision name, timm:ARCH.TAG, a reference model, or package.module:function.",
                         argument=True)
    remove: str = setting(help="How many weights to zero: 12345, 250k, 1M, 20%.")
    data: str | None = setting(None, "Data spec (default: the data the model was made for).", path=True)
    weights: str | None = setting(None, "torchvision weights name (default: DEFAULT).")
    weights_file: str | None = setting(None, "Local base weights (safetensors, or a tensors-only .pth) instead of "
                                             "a download.", path=True)
    preprocess: list[str] = setting([], "Override the model's evaluation preprocessing, as timm data-config keys: "
                                        "interpolation=bicubic crop_pct=1.0 mean=0.5,0.5,0.5 ... (repeatable).",
                                    hashed_when_set=True)
    method: str = setting("learned", "How the mask is searched: learned (a mask trained over the frozen weights; "
                                     "the default, by measurement), greedy (the adaptive loop on gradient statistics, "
                                     "ranking by --score), one-shot (rank once by --score on the dense model, cut at "
                                     "each count of the curve).", choices=_methods)
    score: str = setting("connectome", "How greedy and one-shot rank weights (and what a learned run's restore cycles "
                                       "delete by).", choices=_scores)
    # The spelling before --method and --score: translated on reading (split_criterion) and never stored.
    criterion: str | None = setting(None, "Old spelling: learned is --method learned; a score runs --method greedy "
                                          "--score SCORE.", choices=_criteria)
    # At most 100: z past a few tens only scales the charge; at 1e40 the scores overflowed and the
    # loop ranked removed weights first, stepping forever without removing one.
    confidence: float = setting(8.0, "z of the connectome score's confidence bound (chosen by measurement).",
                                minimum=0, maximum=100)
    include: list[str] = setting([], "Glob on parameter names to prune (repeatable).")
    exclude: list[str] = setting([], "Glob on parameter names to keep (repeatable).")
    calib_samples: int = setting(10000, "Training samples used: the decision and acceptance splits.", minimum=4)
    accept_fraction: float = setting(0.2, "Share of the calibration samples held out to accept steps.",
                                     above=0, below=1)
    eval_samples: int | None = setting(None, "Evaluation subset size (default: the whole split).", minimum=1)
    batch_size: int = setting(128, "Batch size of the statistics and evaluation passes.", minimum=1)
    step: float = setting(0.01, "First step, as a fraction of the prunable weights.", above=0, maximum=1)
    max_step: float = setting(0.05, "Largest step, same unit.", above=0, maximum=1)
    min_step: float = setting(0.0005, "Smallest step, same unit; one that fails defers its weights.", above=0, maximum=1)
    grow: float = setting(1.5, "Factor of the next step after an accepted one.", minimum=1)
    shrink: float = setting(0.5, "Factor of the retried step after a rejected one.", above=0, below=1)
    tolerance: float = setting(4.0, "Accept while actual <= predicted + tolerance*sum(1/2*F*w^2) + 2*stderr(actual) "
                                    "+ budget share.", minimum=0)
    loss_budget: float = setting(0.1, "Surprise the whole run may spend, as a fraction of the dense loss, shared "
                                      "out by step size.", minimum=0)
    max_top1_drop: float | None = setting(None, "Also reject steps losing more acceptance top-1 (points).", minimum=0)
    label_smoothing: float = setting(0.0, "Of the loss the statistics differentiate (the model's training loss).",
                                     minimum=0, below=1)
    restore_cycles: int = setting(0, "Delete-and-restore steps after the target.", minimum=0)
    restore_fraction: float = setting(0.5, "Share of a swap step's size that is restored.", above=0, maximum=1)
    seed: int = setting(0, "Seed of the calibration subsets and of random choices.", minimum=0, maximum=2**31 - 1)
    keep_descents: bool = setting(True, "Keep a step whose measured loss fell beyond its noise, however much more was "
                                        "predicted; size steps by the measured/predicted ratio; defer only weights "
                                        "whose removal measurably hurt (off: the first version's rule).",
                                  hashed_when_set=True, legacy=False)
    descent_keeps_top1: bool = setting(True, "A step whose loss fell is a descent only if acceptance top-1 did not "
                                             "measurably fall (a loss can fall by flattening overconfident logits).",
                                       hashed_when_set=True, legacy=False)
    unknown_last: bool = setting(True, "Rank weights whose gradient and second moment are both zero after all "
                                       "others (unknown, not free).", hashed_when_set=True, legacy=False)
    ratio_hold: float = setting(0.5, "Grow the next step only while measured/predicted change stays at least this.",
                                minimum=0, hashed_when_set=True)
    headroom: bool = setting(True, "After a kept step whose measured/predicted ratio broke away, still grow toward "
                                   "the size where its measured change would meet the allowances (chosen by "
                                   "measurement: 8-17% fewer steps on the demo, the same curve).",
                             hashed_when_set=True, legacy=False)
    pace: bool = setting(False, "Also allow a step the measured cost per weight of the last kept steps: a step is too "
                                "big where its cost grows faster than its size, not where it merely costs as much "
                                "per weight as the steps before it.", hashed_when_set=True)
    unit_share: float | None = setting(None, "Largest share of one output unit's weights (a row, a conv filter) a "
                                             "step may take.", above=0, maximum=1, hashed_when_set=True)
    pattern: str | None = setting(None, "N:M, e.g. 2:4: every group of M consecutive input weights keeps at most N "
                                        "(what sparse tensor cores run); only layers whose rows divide into groups take "
                                        "part, and --remove counts their weights (2:4 is 50%).", hashed_when_set=True)
    # At most 1: one Adam step of that size already moves a score past the magnitude of any weight of a
    # trained network (scores start at |w|), and far larger rates overflow the float32 scores.
    learn_lr: float = setting(1e-4, "Adam learning rate of the learned method's scores.", above=0, maximum=1,
                              hashed_when_set=True)
    learn_epochs: float = setting(40.0, "Epochs over the decision split the learned method may train, shared "
                                        "by the counts of its schedule; --learn-select ends a count sooner where "
                                        "acceptance stops improving (chosen by measurement: on LeNet-300-100, 3 "
                                        "seeds, 40 kept 88.25% / 0.329 at 70% removed, 10 gave 87.95% / 0.352).",
                                  above=0,
                                  maximum=1000, hashed_when_set=True, legacy=10.0)
    learn_points: int = setting(10, "Counts of the curve up to --remove: learned trains them in turn, one-shot "
                                    "cuts at each (compare uses its grid).", minimum=1, hashed_when_set=True)
    learn_select: bool = setting(True, "Judge the learned mask on the acceptance split it never trains on: keep, per "
                                       "count, the scores whose acceptance loss and top-1 are best (the count's "
                                       "starting scores among them), and stop a count's training once acceptance "
                                       "stops improving (off: the last scores, trained for the whole share).",
                                 hashed_when_set=True, legacy=False)
    learn_check: float = setting(0.5, "Epochs between two acceptance checks of --learn-select.", above=0,
                                 maximum=1000, hashed_when_set=True)
    learn_patience: int = setting(2, "Acceptance checks without improvement that end a count's training.",
                                  minimum=1, maximum=1000, hashed_when_set=True)
    learn_distill: float = setting(0.0, "Share of the learned mask's objective that is the dense model's own "
                                        "predictions (KL divergence of the masked model's from the dense one's on "
                                        "the same views) rather than the labels: 0 trains on labels alone, 1 on the "
                                        "dense model alone.", minimum=0, maximum=1, hashed_when_set=True)
    learn_accept: str = setting("pareto", "How --learn-select judges a check against the count's best so far: "
                                          "pareto (neither acceptance loss nor top-1 worse, one better) or paired "
                                          "(per image: loss lower by more than one standard error of the paired "
                                          "difference, top-1 not lower by more than one).",
                                choices=["pareto", "paired"], hashed_when_set=True)
    learn_restart: bool = setting(False, "Start each count of the learned schedule from the previous count's scores "
                                         "or from global magnitude's, whichever mask is better on the acceptance "
                                         "images at the new count.", hashed_when_set=True)
    learn_augment: bool | None = setting(None, "Train the learned mask on random resized crops and flips of the "
                                                "decision images (torchvision's RandomResizedCrop defaults), the views "
                                                "ImageNet classifiers are trained on [default: on for image folders, "
                                                "off for MNIST and CIFAR tensors].", hashed_when_set=True,
                                         legacy=False)
    # Runtime: how the run is computed, not what it decides.
    eval_every: int = setting(5, "Evaluate on the evaluation split every this many accepted steps.", minimum=1,
                              runtime=True)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", runtime=True)
    amp: bool = setting(False, "bf16 autocast for forward/backward on GPU (statistics stay float64).", runtime=True)
    channels_last: bool | None = setting(None, "channels_last memory format for model and batches "
                                               "[default: on for CUDA, and on CPU for networks with convolutions].", runtime=True)
    compile: bool = setting(False, "torch.compile the model used for statistics and evaluation.", runtime=True)
    # More workers than cores only adds processes that wait for one.
    workers: int | None = setting(None, "DataLoader workers [default: 0 for in-memory datasets, a share of the "
                                        "cores for image folders].", minimum=0, maximum=os.cpu_count() or 1,
                                  runtime=True)
    cache_calib: str | None = setting(None, "Decode the calibration and evaluation images of an image folder once "
                                            "into uint8 tensor files in this folder.", runtime=True, path=True)

    def __post_init__(self):
        # --criterion as it was spelled before methods and scores were apart: read once, then gone, so
        # that settings, digests and records hold the method and score alone.
        self.notes: list[str] = []
        if self.criterion is not None:
            self.method, score = split_criterion(self.criterion)
            self.score = score or self.score
            self.notes.append(f"--criterion {self.criterion} now reads --method {self.method}"
                              + (f" --score {score}" if score else ""))
            self.criterion = None

    @classmethod
    def score_default(cls) -> str:
        return next(s.default for s in cls.specs() if s.name == "score")

    @classmethod
    def from_mapping(cls, values, source="settings", allow=frozenset()):
        if isinstance(values, dict) and type(values.get("remove")) is int:  # a count written as a YAML/JSON number
            values = {**values, "remove": str(values["remove"])}
        if isinstance(values, dict) and values.get("criterion") is not None and ("method" in values or "score" in values):
            raise ConnectomeError(f"{source}: criterion is the old spelling of method and score: give one or the other")
        return super().from_mapping(values, source, allow)

    def methods_run(self) -> list[type]:
        """The methods of the run, in order: its own, then the one that runs its restore cycles."""
        first = METHODS[self.method]
        restorer = [m for m in METHODS.values() if m.restores and m is not first] if self.restore_cycles else []
        return [first, *restorer]

    def decided(self) -> set[str]:
        """The names of the settings that decide this run (see the module's docstring)."""
        parts = self.methods_run()
        names = {"method"}
        if any(m.ranks for m in parts):
            parts.append(_score_class(self.score))
            names.add("score")
        owned = _owned()
        common = {s.name for s in self.specs() if s.name not in owned and s.name not in ("method", "score", "criterion")}
        return names | common | {n for part in parts for n in part.settings}

    def hashed(self) -> dict:
        """The settings that decide the run, the method and score spelled as runs were named before they
        were apart (`criterion`: the score of a method that ranks, else the method; `method` only where
        the criterion alone read as another), so a greedy connectome run keeps its first digest."""
        out = super().hashed()
        method, score = out.pop("method"), out.pop("score", None)
        criterion = score if METHODS[method].ranks else method
        out["criterion"] = criterion
        if split_criterion(criterion)[0] != method:
            out["method"] = method
        if score is not None and criterion != score:
            out["score"] = score
        return out

    def decides(self, name: str) -> bool:
        return name in self.decided()

    def _decides(self, spec) -> bool:
        return not spec.meta["runtime"] and spec.name in self.decided()

    @classmethod
    def from_record(cls, stored: dict):
        """The settings a state file or settings.json recorded, as these settings (None where they do
        not read as such): a run started under another digest rule is known by its settings (read-time
        translation; a setting added since counts at the value such runs behaved as)."""
        names = {s.name: s for s in cls.specs()}
        values = {k: v for k, v in stored.items() if k in names}
        if values.get("criterion") is not None and "method" in values:  # method and score decide
            values.pop("criterion")
        values.update({n: s.meta["legacy"] for n, s in names.items() if s.meta["hashed_when_set"] and n not in values})
        try:
            return cls(**values)
        except (TypeError, ValueError, ConnectomeError):
            return None

    def same_run(self, stored: dict) -> bool:
        """The recorded settings are a run of these: the digest of the record, by today's rule, is ours."""
        record = self.from_record(stored)
        return record is not None and record.digest() == self.digest()

    def diff(self, stored: dict) -> list[str]:
        record = self.from_record(stored)
        return super().diff(record.to_dict() if record is not None else stored)

    def recorded(self) -> str:
        """The `criterion` a model file's metadata records, as files were written before methods and
        scores were apart (so a greedy or learned run's files are byte for byte what they were)."""
        return {"learned": "learned", "greedy": self.score}.get(self.method, f"{self.method}:{self.score}")

    def label(self) -> str:
        """What ran, in words for titles and records: "learned", "greedy connectome", "one-shot wanda"."""
        return f"{self.method} {self.score}" if METHODS[self.method].ranks else self.method

    def check(self) -> None:
        if self.pattern is not None:
            from connectome.pruning.pattern import Pattern
            Pattern.parse(self.pattern)
        if self.preprocess:
            from connectome.models.preprocess import check_preprocess
            try:
                check_preprocess(self.preprocess)
            except ConnectomeError as e:
                raise ValueError(str(e)) from None
        n_accept = max(2, int(round(self.calib_samples * self.accept_fraction)))
        if self.calib_samples - n_accept < 2:
            raise ValueError(f"calib_samples {self.calib_samples} with accept_fraction {self.accept_fraction:g} "
                             f"leaves fewer than 2 samples for the statistics")
        if not self.min_step <= self.step <= self.max_step:
            raise ValueError("step sizes must satisfy min_step <= step <= max_step")
        text = self.remove.strip()
        try:  # syntax only: a count against the model comes with the model
            parse_count(text, 100) if text.endswith("%") else parse_count(text, 10**18)
        except Exception as e:
            raise ValueError(f"remove: {e}".replace("exceeds the 100 prunable weights", "is over 100%")) from None

    def run_name(self) -> str:
        return self.model


@dataclass
class CompareSettings(PruneSettings):
    """`compare`: the prune settings, plus the methods, the grid and the seeds."""
    KIND = "compare"

    remove: str = setting(help="The largest count of the grid: 12345, 250k, 1M, 20%.")
    methods: list[str] = setting(["learned", "connectome", "magnitude", "wanda", "random", "taylor", "fisher"],
                                 "What to compare (comma-separated or repeated): learned, greedy:SCORE, "
                                 "one-shot:SCORE; a bare score is one-shot, connectome the greedy loop (as before "
                                 "--method).", choices=_compared)
    # Bounds of work a run can finish: each point is an evaluation of every method, each seed all of it again.
    points: int = setting(20, "Grid points up to --remove.", minimum=1, maximum=1000)
    counts: list[str] = setting([], "The grid's counts instead of --points (e.g. 5%,10%,20%), where the curves bend; "
                                    "none above --remove.", hashed_when_set=True)
    seeds: int = setting(3, "Seeds of the calibration subsets and random choices, from --seed on.", minimum=1,
                         maximum=100)

    def __post_init__(self):
        super().__post_init__()
        # Names of one run (connectome, greedy and greedy:connectome) run once, under the first name.
        runs: dict[tuple, str] = {}
        for name in self.methods:
            first = runs.setdefault(split_compared(name), name)
            if first != name:
                self.notes.append(f"--methods {name} is the run of {first}: it runs once")
        self.methods = list(runs.values())

    def run_settings(self, entry: str, seed: int | None = None) -> PruneSettings:
        """The settings of one entry's run: `prune` with its method and score gives the same digest."""
        method, score = split_compared(entry)
        return dataclasses.replace(self.prune_settings(self.seed if seed is None else seed), method=method,
                                   **({"score": score} if score else {}))

    def decided(self) -> set[str]:
        """The grid's settings, and those that decide any of its runs."""
        runs = {n for entry in self.methods for n in self.run_settings(entry).decided()} - {"method", "score"}
        return runs | {"methods", "points", "counts", "seeds"}

    def hashed(self) -> dict:
        return RunSettings.hashed(self)  # the methods named as given: no criterion to spell

    def check(self) -> None:
        super().check()
        if not self.methods:
            raise ValueError("methods names no method")
        if self.seed + self.seeds - 1 > 2**31 - 1:
            raise ValueError(f"seeds: seed {self.seed} + {self.seeds} seeds goes past the largest seed, 2147483647")
        for c in self.counts:
            try:
                parse_count(c, 100) if c.strip().endswith("%") else parse_count(c, 10**18)
            except Exception as e:
                raise ValueError(f"counts: {e}") from None
        remove = self.remove.strip()
        unit = 100 if remove.endswith("%") else 10**18
        for c in self.counts:  # in the same unit as --remove, refused before the model loads
            if c.strip().endswith("%") == remove.endswith("%") and parse_count(c.strip(), unit) > parse_count(remove, unit):
                raise ValueError(f"counts: {c} is above remove {self.remove} (the grid stops at remove)")

    def run_name(self) -> str:
        return f"compare-{self.model}"

    def prune_settings(self, seed: int) -> PruneSettings:
        """The settings of one seed's pruning (the compare-only fields dropped)."""
        names = {s.name for s in PruneSettings.specs()}
        return PruneSettings(**{**{k: v for k, v in self.to_dict().items() if k in names}, "seed": seed})
