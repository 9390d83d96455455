"""One server per root: the jobs database, run folders and weights of a root are one server's.

Two servers on one root would both start each queued job (two workers writing one run folder), and
when one stopped it would leave the job `running` with no worker until the other restarted. The
server holds an exclusive flock on ROOT/server.lock for its whole life; the kernel drops it when the
process ends, however it ends (kill -9 included), so a restarted server never waits on a dead one.
"""

import fcntl
import os
from pathlib import Path

from connectome.errors import ConnectomeError

LOCK = "server.lock"


def hold(root: Path):
    """Lock `root` for this process; return the open lock file (keep it: closing it unlocks).
    ConnectomeError, in one line naming the holder, when another server holds it."""
    path = Path(root) / LOCK
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ConnectomeError(f"{root} is served by another connectome server ({holder}): stop it, "
                              f"or give this one another --root") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    return f
