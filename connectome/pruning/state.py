"""The pruning loop's state as a typed record, and its file.

`state.safetensors` in a run folder holds the mask (with the deferred weights) as tensors and this
record, the settings and the step log as metadata. The loop rewrites it atomically after every step,
so a run killed at any moment resumes to the same mask; the service reads progress from it with
`LoopState.read`, never by key names of its own.
"""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.io import mark_folder, read_metadata
from connectome.pruning.mask import Mask

FILE = "state.safetensors"


@dataclass
class LoopState:
    size: int  # the next step's size, in weights
    step_index: int = 0  # steps tried so far, accepted or not
    cycles_done: int = 0  # delete-and-restore steps done after the target was reached
    deferrals_in_row: int = 0  # failed smallest steps since the last accepted one
    accepted_since_eval: int = 0
    elapsed: float = 0.0  # seconds of work, summed over resumes
    target: int = 0  # the count the run removes (for watchers)
    prunable: int = 0  # the weights it may remove (for watchers)
    log: list[dict] = field(default_factory=list)  # one row per step tried; row 0 is the dense model

    def save(self, path: Path, mask: Mask, settings, kind: str | None = None) -> None:
        """`kind`: the method whose state this is, where it is not the greedy loop's."""
        loop = self.record()
        meta = {"settings": json.dumps(asdict(settings), sort_keys=True), "digest": settings.digest(),
                "loop": json.dumps(loop), "log": json.dumps(self.log), **({"kind": kind} if kind else {})}
        mark_folder(path.parent)  # a run started from the library is a run folder too: --resume takes it
        mask.save(path, meta)

    def record(self) -> dict:
        """Everything but the log: the state file's "loop" entry, which watchers read (LoopState.read)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "log"}

    @classmethod
    def from_metadata(cls, meta: dict, path: Path) -> "LoopState":
        try:
            loop = json.loads(meta["loop"])
            names = {f.name for f in fields(cls)} - {"log"}
            return cls(**{k: v for k, v in loop.items() if k in names}, log=json.loads(meta["log"]))
        except (KeyError, TypeError, ValueError):
            raise ConnectomeError(f"{path}: the run state is unreadable (not written by a pruning run?)") from None

    @classmethod
    def read(cls, path: Path) -> "LoopState":
        """The record alone (for watchers): no tensors are read."""
        try:
            meta = read_metadata(path)
        except Exception:
            raise ConnectomeError(f"{path}: the run state is unreadable (truncated or not a safetensors file)") from None
        return cls.from_metadata(meta, path)

    @classmethod
    def load(cls, path: Path, settings) -> tuple["LoopState", Mask]:
        """The record and the mask of a run folder's state, after checking it was started with
        the same settings (runtime settings may differ)."""
        unreadable = ConnectomeError(f"{path}: the run state is unreadable (truncated or not a safetensors file): "
                                     f"choose another --out")
        try:
            meta = read_metadata(path)
        except Exception:
            raise unreadable from None
        # The settings first: a state written under others (a learned run's scores, resumed with
        # --method greedy) holds no mask this loop reads, and what differs is the setting.
        check_settings(meta, settings, path)
        try:
            mask = Mask.load(path)
        except Exception:
            raise unreadable from None
        return cls.from_metadata(meta, path), mask


def check_settings(meta: dict, settings, path: Path) -> None:
    """A state resumes only under the settings it was written with (runtime settings aside): otherwise
    one line names the settings that differ. A state written under an earlier digest rule (before each
    method declared the settings it reads) is known by the settings it records: read-time translation,
    and the next save records today's digest."""
    if meta.get("digest") == settings.digest():
        return
    try:
        stored = json.loads(meta.get("settings", "{}"))
    except ValueError:
        stored = {}
    stored = stored if isinstance(stored, dict) else {}
    if not settings.same_run(stored):
        raise settings.mismatch(path.parent, stored)
