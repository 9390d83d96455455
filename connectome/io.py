"""Checkpoint files: atomic writes, safetensors with metadata, and the invariant check."""

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block finishes, so a
    crash at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a result is as readable as any new file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def folder_lock(folder: str | Path, on_wait=None):
    """Hold an exclusive lock on `folder` (its `.lock` file) so two processes never write one run;
    a second one waits for the first to end. The kernel drops the lock when its holder dies."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def save_state(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # safetensors refuses shared or non-contiguous storage: give it one clean tensor per name.
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


@dataclass(frozen=True)
class InvariantReport:
    """How a state dict relates to its base: every value must equal the base or be zero."""
    tensors: int
    values: int
    zeroed: int  # zero here, non-zero in the base
    zero_in_base: int  # already zero in the base
    violations: int  # neither the base value nor zero
    first_violation: str | None

    @property
    def ok(self) -> bool:
        return self.violations == 0


def check_invariant(state: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> InvariantReport:
    if set(state) != set(base):
        missing, extra = sorted(set(base) - set(state))[:3], sorted(set(state) - set(base))[:3]
        return InvariantReport(len(state), 0, 0, 0, 1, f"tensor names differ: missing {missing}, extra {extra}")
    values = zeroed = zero_in_base = violations = 0
    first = None
    for name in sorted(base):
        a, b = state[name].cpu(), base[name].cpu()
        if a.shape != b.shape or a.dtype != b.dtype:
            violations += 1
            first = first or f"{name}: shape/dtype {tuple(a.shape)}/{a.dtype} vs base {tuple(b.shape)}/{b.dtype}"
            continue
        values += a.numel()
        # Bitwise equality (NaN-safe and exact), or exactly zero.
        same = a.view(-1).view(torch.uint8).view(a.numel(), -1).eq(b.view(-1).view(torch.uint8).view(b.numel(), -1)).all(1) \
            if a.numel() else torch.zeros(0, dtype=torch.bool)
        is_zero = a.reshape(-1) == 0
        base_zero = b.reshape(-1) == 0
        bad = ~(same | is_zero)
        zeroed += int((is_zero & ~base_zero).sum())
        zero_in_base += int(base_zero.sum())
        n_bad = int(bad.sum())
        if n_bad:
            violations += n_bad
            first = first or f"{name}: {n_bad} values changed"
    return InvariantReport(len(base), values, zeroed, zero_in_base, violations, first)
