"""`prune(settings, out)`: a whole pruning run as a library call, the one path that the command line,
the service's workers and torchrun ranks all take.

Everything is checked before anything is written; one process writes a run folder at a time (its
`.lock`); under torchrun every rank computes and rank 0 writes.
"""

import contextlib
from pathlib import Path

from connectome.device import resolve_device
from connectome.distributed import init_from_env, is_main
from connectome.errors import ConnectomeError
from connectome.io import folder_lock, read_metadata
from connectome.pruning.results import write_results
from connectome.pruning.settings import PruneSettings
from connectome.pruning.setup import Runtime, prepare
from connectome.pruning.state import FILE


def check_out(out: Path, resume: bool) -> None:
    """The checks on the run folder that need neither model nor data."""
    if out.exists() and not out.is_dir():
        raise ConnectomeError(f"--out {out} is a file, not a folder")
    if (out / FILE).exists() and not resume:
        raise ConnectomeError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")


def prune(s: PruneSettings, out: Path | None = None, resume: bool = False, progress: bool = True,
          command: str = "", on_start=None, on_wait=None, on_step=None) -> dict | None:
    """Run (or resume) a pruning run in `out` (default: runs/<model>-<digest>). Returns the manifest
    on the writing process, None on other torchrun ranks. `on_start(setup, run)` is told when the
    loop begins, `on_wait()` when another process holds the folder and this one waits for it."""
    out = Path(out) if out else s.default_out()
    check_out(out, resume)
    device = init_from_env(resolve_device(s.device))  # under torchrun: join the group, one device per rank
    setup = prepare(s, device)  # every check that needs the model and data, before anything is written
    if s.cache_calib:  # a cache folder, not the run folder: ranks and runs share it under its own lock
        from connectome.data.decoded import cache_calibration
        setup = cache_calibration(setup, s.cache_calib, s.workers, progress=progress and is_main())
    lock = folder_lock(out, on_wait=on_wait, wait=resume) if is_main() else contextlib.nullcontext()
    with lock:
        rt = Runtime.of(s, device, progress, Runtime.convolutional(setup))
        run = start_run(setup, out, resume, rt, on_step)
        if on_start and is_main():
            on_start(setup, run)
        run.run()
        restorer = s.methods_run()[-1]
        if not isinstance(run, restorer):  # the restore cycles, from the method's mask
            run = restorer(setup, out, runtime=rt, on_step=on_step, start=run)
            run.run()
        return write_results(run, command) if is_main() else None


def start_run(setup, out: Path, resume: bool, rt: Runtime, on_step):
    """The settings' method in the folder; a run whose restore cycles have begun resumes as the greedy
    loop that runs them (the loop's state then replaces the method's in the folder)."""
    state = out / FILE
    method, *restorer = setup.settings.methods_run()
    if restorer and resume and state.exists() and is_greedy_state(state):
        method = restorer[0]
    return method(setup, out, resume=resume, runtime=rt, on_step=on_step)


def is_greedy_state(path: Path) -> bool:
    """The folder's state is the greedy loop's (whose state names no kind) where the method's own names
    its kind. An unreadable file is left to the method's own check."""
    try:
        return read_metadata(path).get("kind") is None
    except Exception:
        return False
