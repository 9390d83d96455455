"""Runs jobs: each one is a child `connectome prune --out=RUN [--resume] --quiet --job=RUN/job.json` process.

A job is its validated settings (connectome.serve.spec); the worker writes them to `job.json` in the
run folder and runs what the command line runs, so the service adds no second pruning path. Because
a restarted job runs with `--resume`, a job whose server died is simply started again: the run
continues from its last saved step and ends with the mask an uninterrupted run would have. Progress
is read with `LoopState.read` from the run folder's state file, which the run rewrites atomically
after every step.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.io import mark_folder, open_nofollow, write_text
from connectome.pruning.state import FILE as STATE_FILE, LoopState
from connectome.serve.jobs import JobStore
from connectome.serve.policy import Policy
from connectome.serve.spec import check_allowed, stored_settings

LOG_TAIL = 20  # lines of a failed job's log kept as its error
JOB_FILE = "job.json"  # the job's settings, in its run folder: what `prune --job` reads


def point_of(row: dict) -> dict:
    """A curve point of the API from an accepted row of the run's log."""
    return {"step": row["step"], "removed": row["removed"], "top1": row.get("accept_top1"),
            "loss": row.get("accept_loss"), "eval_top1": row.get("eval_top1"), "eval_loss": row.get("eval_loss"),
            "seconds": row.get("seconds")}


def settings_of(job: dict, policy: Policy):
    """(PruneSettings, ranks) of a stored job, validated again and allowed by this server's `policy`;
    ConnectomeError for a damaged row or one this server refuses."""
    try:
        spec = json.loads(job["spec"])
    except (TypeError, ValueError):
        raise ConnectomeError(f"job {job['id']}: the stored job is not JSON") from None
    settings, nproc = stored_settings(spec, f"job {job['id']}")
    check_allowed(settings, policy)
    return settings, nproc


def _processes_of(run_dir: Path) -> list[int]:
    """Pids whose command line writes `run_dir` (a worker left over from a server killed with -9,
    and under torchrun its ranks too)."""
    needle = f"--out={run_dir}".encode() + b"\0"  # arguments end with NUL
    pids = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Scheduler:
    """Starts queued jobs while fewer than `workers` run, follows them, and records how they end."""

    def __init__(self, store: JobStore, root: Path, workers: int = 1, poll: float = 0.5, gpus: int = 0,
                 policy: Policy | None = None):
        self.store, self.root, self.workers, self.poll = store, root, workers, poll
        self.policy = policy or Policy()  # the strictest: no user code, no data roots
        # GPUs are handed out whole: a job gets `nproc_per_node` of them (one without torchrun), named
        # as the server sees them, so that a server started with CUDA_VISIBLE_DEVICES=2,3 uses 2 and 3.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.devices = visible.split(",")[:gpus] if visible else [str(i) for i in range(gpus)]
        self.gpus_of: dict[int, list[str]] = {}
        self.procs: dict[int, subprocess.Popen] = {}
        self.seen: dict[int, float] = {}  # state file mtime already copied, per job
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def run_dir(self, job_id: int) -> Path:
        return self.root / "runs" / str(job_id)

    def log_path(self, job_id: int) -> Path:
        return self.root / "logs" / f"{job_id}.log"

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        self.thread = threading.Thread(target=self._loop, name="connectome-scheduler", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop following; children are stopped and their jobs stay `running`, to resume at the next start."""
        self.stop_event.set()
        if self.thread:
            self.thread.join()
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)

    def recover(self) -> None:
        """Jobs left `running` by a server that died: end any worker still writing their run folder,
        then queue them first, to continue with --resume."""
        for job in self.store.in_state("running"):
            pids = _processes_of(self.run_dir(job["id"]))
            for pid in pids:
                _kill(pid)
            deadline = time.time() + 30
            while _processes_of(self.run_dir(job["id"])) and time.time() < deadline:
                time.sleep(0.1)
            self.store.update(job["id"], state="queued", pid=None)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception as e:  # a scheduler that dies silently loses every job after it
                print(f"scheduler: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            self.stop_event.wait(self.poll)

    def tick(self) -> None:
        for job_id, proc in list(self.procs.items()):
            self.follow(job_id)
            rc = proc.poll()
            if rc is not None:
                del self.procs[job_id]
                self.gpus_of.pop(job_id, None)
                self._finished(job_id, rc)
        # Jobs started before a restart go first, then the queue in order of submission.
        queued = sorted(self.store.in_state("queued"), key=lambda j: (j["started"] is None, j["id"]))
        for job in queued:
            if len(self.procs) >= self.workers:
                break
            try:
                settings, nproc = settings_of(job, self.policy)
            except ConnectomeError as e:  # a damaged row, or one an earlier server let in: fail it, go on
                self.store.transition(job["id"], ("queued",), state="failed", finished=time.time(), error=str(e))
                continue
            gpus = self._free_gpus(nproc)
            if gpus is None:
                break  # first in, first out: later jobs do not overtake one waiting for GPUs
            try:
                self._launch(job, settings, nproc, gpus)
            except (OSError, ConnectomeError) as e:  # cannot start (no such interpreter, too many processes,
                # a link where its log goes): fail it, go on
                self.store.transition(job["id"], ("queued",), state="failed", finished=time.time(),
                                      error=f"could not start the worker: {e}")

    def _free_gpus(self, nproc: int) -> list[str] | None:
        if not self.devices:
            return []
        busy = {g for gs in self.gpus_of.values() for g in gs}
        free = [g for g in self.devices if g not in busy]
        return free[:nproc] if len(free) >= nproc else None

    # --- one job --------------------------------------------------------------------------------

    def command(self, job_id: int, nproc: int = 1) -> list[str]:
        """The child's command line. `--out=RUN` stays in it: a restarted server finds the workers
        of the server before it by that argument. A first start has nothing to resume: its folder
        holds only job.json, which a resumed run would take for a foreign folder's content."""
        run = self.run_dir(job_id)
        launcher = [sys.executable, "-m", "connectome"]
        if nproc > 1:  # torch's own launcher; ranks split the statistics and evaluation
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                        "-m", "connectome"]
        resume = ["--resume"] if (run / STATE_FILE).exists() else []
        return [*launcher, "prune", f"--out={run}", *resume, "--quiet", f"--job={run / JOB_FILE}"]

    def _launch(self, job: dict, settings, nproc: int, gpus: list[str]) -> None:
        job_id = job["id"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        if "OMP_NUM_THREADS" not in os.environ:
            # Jobs side by side must share the cores: two torch processes that each spin a thread on
            # every core run many times slower than one after the other.
            ranks = self.workers * nproc
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks))
        run = self.run_dir(job_id)
        mark_folder(run)  # the run folder is the service's: `prune` then writes into it
        write_text(run / JOB_FILE, json.dumps(settings.to_dict(), indent=2) + "\n")
        log = self.log_path(job_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        command = self.command(job_id, nproc)
        with os.fdopen(open_nofollow(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as f:  # never via a link
            f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} starting job {job_id}: {shlex.join(command)}\n".encode())
            f.flush()
            # A session of its own: cancel signals the whole group (torchrun and its ranks).
            proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.root, start_new_session=True, env=env)
        if not self.store.transition(job_id, ("queued",), state="running", pid=proc.pid,
                                     started=job["started"] or time.time()):
            _signal_group(proc.pid, signal.SIGKILL)  # cancelled in the meantime
            proc.wait()
            return
        self.procs[job_id] = proc
        self.gpus_of[job_id] = gpus

    def follow(self, job_id: int) -> None:
        """Copy the run's new accepted steps into the store (when its state file changed)."""
        path = self.run_dir(job_id) / STATE_FILE
        try:
            mtime = path.stat().st_mtime_ns
            if self.seen.get(job_id) == mtime:
                return
            state = LoopState.read(path)
        except (OSError, ConnectomeError):
            return  # not written yet, or replaced while read: next tick
        self.seen[job_id] = mtime
        if state.target:
            self.store.update(job_id, target=state.target, prunable=state.prunable)
        last = self.store.last_point(job_id)
        after = last["step"] if last else -1
        new = [point_of(r) for r in state.log if r.get("accepted") and r["step"] > after]
        if new:
            self.store.add_points(job_id, new)

    def _finished(self, job_id: int, rc: int) -> None:
        now = time.time()
        if rc == 0 and (self.run_dir(job_id) / "manifest.json").is_file():
            self.store.transition(job_id, ("running",), state="done", finished=now, pid=None)
        elif not self.store.transition(job_id, ("running",), state="failed", finished=now, pid=None,
                                       error=self.log_tail(job_id) or f"exit code {rc}"):
            self.store.update(job_id, pid=None)  # cancelled: it stays so

    def log_tail(self, job_id: int, lines: int = LOG_TAIL) -> str:
        try:
            with open(self.log_path(job_id), "rb") as f:  # the tail only: a long job's log can be large
                f.seek(max(0, f.seek(0, os.SEEK_END) - 200 * lines))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        # tqdm redraws its bar with carriage returns: keep the last state of each line.
        kept = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
        return "\n".join([line for line in kept if line.strip()][-lines:])

    def cancel(self, job_id: int) -> bool:
        """Cancel a queued or running job; False if it had already ended."""
        job = self.store.get(job_id)
        if job is None or not self.store.transition(job_id, ("queued", "running"), state="cancelled", finished=time.time()):
            return False
        if job["pid"]:
            _signal_group(job["pid"], signal.SIGTERM)
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
