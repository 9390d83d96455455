"""A job as the API shows it: its summary row, and in detail its curve points and served files."""

import json
import time
from pathlib import Path

from connectome.serve.jobs import STATES, JobStore
from connectome.serve.replies import SAFE_NAME
from connectome.serve.worker import JOB_FILE, Scheduler

NOT_SERVED = {"state.safetensors", JOB_FILE}  # the run's working state and the job's own settings
SUMMARY_KEYS = ("id", "state", "command", "spec", "model", "remove", "target", "prunable", "removed", "top1", "loss",
                "steps", "created", "started", "finished", "elapsed", "eta", "error")


class JobView:
    def __init__(self, store: JobStore, scheduler: Scheduler):
        self.store, self.scheduler = store, scheduler

    def files_of(self, job: dict) -> list[Path]:
        """The files a job serves: a finished run's results (not its state, job file or lock)."""
        folder = self.scheduler.run_dir(job["id"])
        if job["state"] != "done" or not folder.is_dir():
            return []
        return [f for f in sorted(folder.iterdir()) if SAFE_NAME.fullmatch(f.name) and not f.name.startswith(".")
                and f.name not in NOT_SERVED and not f.is_symlink() and f.is_file()]

    def describe(self, job: dict, detail: bool = False) -> dict:
        """A job as the API shows it; a row that cannot be read (damaged, or from a foreign writer) is
        shown with its id, its state where valid, and what is wrong, so that no row breaks a listing."""
        try:
            return self._summary(job, detail)
        except Exception as e:
            out = dict.fromkeys(SUMMARY_KEYS)
            state = job.get("state")
            out.update(id=job.get("id"), state=state if state in STATES else "failed", steps=0,
                       error=f"this job's stored row is unreadable ({type(e).__name__})")
            if detail:
                out.update(points=[], files=[])
            return out

    def _summary(self, job: dict, detail: bool) -> dict:
        elapsed = ((job["finished"] or time.time()) - job["started"]) if job["started"] else None
        removed = job["removed"]
        eta = None
        if job["state"] == "running" and removed and job["target"] and elapsed:
            eta = elapsed * max(0, job["target"] - removed) / removed
        evaluated = job["eval_top1"] is not None  # else the acceptance split's, measured every step
        out = {"id": job["id"], "state": job["state"], "command": job["command"], "spec": json.loads(job["spec"]),
               "model": job["model"], "remove": job["remove"], "target": job["target"], "prunable": job["prunable"],
               "removed": removed, "top1": job["eval_top1"] if evaluated else job["accept_top1"],
               "loss": job["eval_loss"] if evaluated else job["accept_loss"], "steps": max(0, job["steps"] or 0),
               "created": job["created"], "started": job["started"], "finished": job["finished"],
               "elapsed": elapsed, "eta": eta, "error": job["error"]}
        if detail:
            out["points"] = self.store.points(job["id"])
            out["files"] = [{"name": f.name, "size": f.stat().st_size, "url": f"/api/jobs/{job['id']}/files/{f.name}"}
                            for f in self.files_of(job)]
        return out
