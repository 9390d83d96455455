"""The settings of `lottery`, each declared once (see connectome.settings).

Defaults are the paper's LeNet-300-100 values; those marked "(no effect)" are off at their default.
The run folder is named by the digest of the hashed settings. That digest names folders that already
exist (the benchmark's among them), so it must not move: the hashed settings are exactly those of the
first version, and every setting added since is runtime.
"""

from dataclasses import dataclass

from connectome.settings import RunSettings, setting


# The registries live with their code; imported only when a value is checked or --help is shown.
def _models() -> list[str]:
    from connectome.lottery.networks import MODELS
    return list(MODELS)


def _strategies() -> list[str]:
    from connectome.lottery.strategies import STRATEGIES
    return list(STRATEGIES)


def _controls() -> list[str]:
    from connectome.lottery.controls import CONTROLS
    return list(CONTROLS)


MAX_LEVELS = 100
RATE = dict(minimum=0, below=1)  # a fraction of the surviving weights; 1 would remove them all


@dataclass
class LotterySettings(RunSettings):
    """Every hyperparameter of a lottery run."""
    KIND = "lottery"
    DIGEST_CHARS = 10  # runs/lottery-<10 hex digits>, as the folders made before these settings

    model: str = setting(help="The network.", choices=_models)
    data: str | None = setting(None, "Data spec, e.g. fashion-mnist or cifar10:/path (the binary release, an image "
                                     "folder with train/ and test/, or a .tar.gz of one; default: the data the "
                                     "network was made for).", path=True)
    iterations: int = setting(50000, "Training iterations per level.", minimum=1)
    batch_size: int = setting(60, "Training batch size.", minimum=1)
    lr: float = setting(1.2e-3, "Adam learning rate.", above=0, maximum=1)
    strategy: str = setting("layerwise", "How each level prunes: per layer at its kind's rate, or all layers "
                                         "pooled at --global-rate.", choices=_strategies)
    conv_rate: float = setting(0.0, "Fraction of the surviving conv weights removed per level (no effect).", **RATE)
    fc_rate: float = setting(0.2, "Same, each hidden fully connected layer.", **RATE)
    output_rate: float = setting(0.1, "Same, the output layer (the paper: half the fc rate).", **RATE)
    global_rate: float = setting(0.2, "Strategy global: fraction of all surviving weights, pooled.", **RATE)
    rewind_iter: int = setting(0, "Reset survivors to their values at this iteration of the dense training; "
                                  "0 = the initialisation (no effect).", minimum=0)
    val_samples: int = setting(5000, "Validation examples held out of the training split; early stopping reads "
                                     "only these.", minimum=1)
    train_samples: int | None = setting(None, "Training examples (default: the rest of the training split).",
                                        minimum=1)
    test_samples: int | None = setting(None, "Test examples (default: the whole test split).", minimum=1)
    eval_every: int = setting(100, "Iterations between validation evaluations.", minimum=1)
    seed: int = setting(0, "Seed of the initialisation, the data order and the subsets.", minimum=0)
    # Runtime. A folder accumulates levels and controls, saving changes no number, and the device and
    # threads change how fast, not what: none of these enter the digest, so any of them may change
    # between two invocations on one folder.
    # Each level is a whole training; at the paper's 20% a level, 25 levels leave 0.4% of the weights.
    levels: int = setting(0, "Pruning levels after the dense training.", minimum=0, maximum=MAX_LEVELS, runtime=True)
    controls: list[str] = setting([], "Controls trained at the pruned levels, comma-separated (no effect).",
                                  choices=_controls, runtime=True)
    control_levels: list[int] | None = setting(None, "Levels that get the controls (comma-separated; default: "
                                                     "every pruned level).", minimum=1, runtime=True)
    checkpoint_every: int = setting(500, "Iterations between saves of the training state.", minimum=1,
                                    runtime=True)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", runtime=True)
    threads: int = setting(0, "torch threads (0: torch's default).", minimum=0, runtime=True)

    @classmethod
    def from_recipe(cls, recipe: str, overrides: dict | None = None) -> "LotterySettings":
        """A recipe's settings (a path, or a name in recipes/), with `overrides` on top; validated."""
        from connectome.recipes import load_recipe

        return cls.from_mapping({**load_recipe(recipe, cls.KIND), **(overrides or {})}, f"recipe {recipe}")

    def check(self) -> None:
        if self.rewind_iter >= self.iterations:
            raise ValueError(f"rewind_iter must lie in [0, iterations={self.iterations}), got {self.rewind_iter}")
        bad = [lv for lv in (self.control_levels or []) if not 1 <= lv <= self.levels]
        if bad:
            raise ValueError(f"control levels {bad} are not pruned levels of this run (1..{self.levels})")

    def rate(self, kind: str) -> float:
        """The per-level rate of a layer kind (conv, fc or output)."""
        return {"conv": self.conv_rate, "fc": self.fc_rate, "output": self.output_rate}[kind]
