"""Files: atomic writes, folder locks, safetensors with metadata written byte-reproducibly, and the
invariant check (every weight equals its base value or zero)."""

import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open


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


MARKER = ".connectome"  # in every folder connectome writes: what makes it one of ours
# What a folder written before the marker existed holds: the lock every run takes (prune, a cache),
# and, by the keys connectome wrote in them, the settings record (lottery), compare's results and the
# service's job file (names common enough that a user's folder may hold a file of that name).
_LEGACY_KEYS = {"settings.json": ("settings", "digest"), "compare.json": ("dense", "summary"),
                "job.json": ("model", "remove")}


def _written_before(folder: Path, names: list[str]) -> bool:
    if ".lock" in names:
        return True
    for name, keys in _LEGACY_KEYS.items():
        if name in names:
            try:
                record = json.loads((folder / name).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and all(k in record for k in keys):
                return True
    return False


def foreign_files(folder: str | Path) -> list[str]:
    """Names in `folder` that connectome did not write there: empty unless the folder exists, holds
    something, and carries neither the marker nor a file every earlier version wrote first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir())
    if not names or MARKER in names or _written_before(folder, names):
        return []
    return names


def check_folder(folder: str | Path, what: str = "--out") -> None:
    """Refuse, before anything is written, a folder that cannot be written as a run folder: a path
    through a file, a file itself, or a folder of someone else's files (which a run would overwrite)."""
    from connectome.errors import ConnectomeError

    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is a file" if parent == folder else f"lies under {parent}, which is a file"
                raise ConnectomeError(f"{what} {folder} {where}, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):  # said now, not after the model and data load
                raise ConnectomeError(f"{what} {folder}: no permission to write in {parent}")
            break
    foreign = foreign_files(folder)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConnectomeError(f"{what} {folder} holds files connectome did not write ({shown}): "
                              f"choose a new or empty folder")


def mark_folder(folder: str | Path) -> None:
    """Create `folder` if needed and mark it as written by connectome (once)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARKER).exists():
        write_text(folder / MARKER, "a folder written by connectome\n")


@contextlib.contextmanager
def claimed_folder(folder: str | Path, what: str = "--out"):
    """Check and mark `folder` for the block; a folder this call created is removed again if the
    block fails before writing anything (the marker aside)."""
    folder = Path(folder)
    check_folder(folder, what)
    created = not folder.exists()
    mark_folder(folder)
    try:
        yield folder
    except BaseException:
        if created and not any(p.name != MARKER for p in folder.iterdir()):
            (folder / MARKER).unlink(missing_ok=True)
            folder.rmdir()
        raise


def open_nofollow(path: str | Path, flags: int) -> int:
    """A descriptor of the regular file `path` opened with `flags`, never through a link: a link
    planted in a run folder (`.lock` -> ~/thesis.tex) would have its target truncated or appended to,
    and a dangling one would create its target. A FIFO would block an open for writing, and is refused
    like anything else that is not a regular file."""
    from connectome.errors import ConnectomeError

    not_a_file = ConnectomeError(f"{path} is not a regular file: remove it")
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConnectomeError(f"{path} is a symbolic link: connectome writes no file of a folder through a "
                                  f"link; remove it") from None
        if e.errno == errno.ENXIO:  # a FIFO without a reader, opened write-only
            raise not_a_file from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise not_a_file
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def folder_lock(folder: str | Path, on_wait=None, wait: bool = True):
    """Hold an exclusive lock on `folder` (its `.lock` file) so two processes never write one run.
    A second one waits for the first to end (`wait`), or is refused at once: a new run has nothing
    to wait for in a folder that another process is filling. The kernel drops the lock when its
    holder dies. A folder this call created is removed again if the lock is refused. A folder that
    holds files connectome did not write is refused before anything is written into it."""
    import fcntl

    from connectome.errors import ConnectomeError

    folder = Path(folder)
    check_folder(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_nofollow(folder / ".lock", os.O_RDWR | os.O_CREAT), "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise ConnectomeError(f"{folder} is being written by another process: wait for it, or pass "
                                      f"--resume to continue its run once it stops") from None
            if on_wait:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            mark_folder(folder)
            yield
        except BaseException:
            if created and not any(p.name not in (".lock", MARKER) for p in folder.iterdir()):
                for name in (".lock", MARKER):  # nothing was written: leave nothing behind
                    (folder / name).unlink(missing_ok=True)
                folder.rmdir()
            raise


def read_bounded(path: str | Path, limit: int, what: str, hint: str) -> bytes:
    """The bytes of the regular file `path`, read no further than `limit`: a FIFO, /dev/zero or a file
    of gigabytes is refused in one line instead of read for ever. `what` names the file in the
    messages; `hint` says what it should hold, when it is too large."""
    from connectome.errors import ConnectomeError

    if not Path(path).is_file():
        raise ConnectomeError(f"{what} is not a file")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ConnectomeError(f"{what} cannot be read ({e.strerror})") from None
    if len(data) > limit:
        size = f"{limit // 1024} kB" if limit % 1024 == 0 else f"{limit} bytes"
        raise ConnectomeError(f"{what} is over {size}: {hint}")
    return data


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def canonical_safetensors(data: bytes) -> bytes:
    """The same file with its JSON header's keys sorted. safetensors writes the metadata map in a
    per-process hash order, so two runs that made the same decisions wrote different bytes; sorted,
    the same tensors and metadata give the same sha256 (what a published weight's hash needs). The
    tensor offsets are relative to the end of the header, so re-serialising it moves no data."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 with spaces
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def save_state(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    # safetensors refuses shared or non-contiguous storage: give it one clean tensor per name.
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    write_bytes(path, canonical_safetensors(save(clean, metadata={k: str(v) for k, v in (metadata or {}).items()})))


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
        # Floating tensors of two dtypes compare by value in float64, which holds every float16,
        # bfloat16 and float32 exactly: a float64 base value that float32 cannot hold is changed.
        across = a.dtype != b.dtype and a.is_floating_point() and b.is_floating_point()
        if a.shape != b.shape or (a.dtype != b.dtype and not across):
            violations += 1
            first = first or f"{name}: shape/dtype {tuple(a.shape)}/{a.dtype} vs base {tuple(b.shape)}/{b.dtype}"
            continue
        values += a.numel()
        # Bitwise equality (NaN-safe and exact), or exactly zero.
        if across:
            same = a.reshape(-1).double() == b.reshape(-1).double()
        elif a.numel():
            same = a.view(-1).view(torch.uint8).view(a.numel(), -1).eq(b.view(-1).view(torch.uint8).view(b.numel(), -1)).all(1)
        else:
            same = torch.zeros(0, dtype=torch.bool)
        is_zero = a.reshape(-1) == 0
        base_zero = b.reshape(-1) == 0
        bad = ~(same | is_zero)
        zeroed += int((is_zero & ~base_zero).sum())
        zero_in_base += int(base_zero.sum())
        n_bad = int(bad.sum())
        if n_bad:
            violations += n_bad
            first = first or f"{name}: {n_bad} values changed" + (f" ({a.dtype} here, {b.dtype} in the base)" if across else "")
    return InvariantReport(len(base), values, zeroed, zero_in_base, violations, first)


def strict_json(value):
    """`value` with every non-finite float replaced by None: a loss that overflowed is null in strict
    JSON, which every reader reads (bare NaN and Infinity are not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value
