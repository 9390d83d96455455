"""/api/jobs/ID/events: a job's live curve as server-sent events."""

import asyncio
import re

from fastapi import APIRouter, Request
from sse_starlette.sse import EventSourceResponse

from connectome.serve.deps import PathJob, Store, View
from connectome.serve.jobs import FINISHED
from connectome.serve.replies import dumps

router = APIRouter()


@router.get("/api/jobs/{job_id:jobid}/events")
async def events(job: PathJob, request: Request, store: Store, view: View):
    """Server-sent events: `step` per accepted step, `state` on changes, `end` when the job ends."""
    last_id = request.headers.get("last-event-id", "")
    after = int(last_id) if re.fullmatch(r"[0-9]{1,18}", last_id) else -1  # a step number SQLite can compare
    return EventSourceResponse(stream(job["id"], after, store, view, request.app.state.poll), ping=15)


async def stream(job_id: int, after: int, store, view, poll: float):
    shown = None
    while True:
        job = store.get(job_id)  # read before the points: a finished job's points are all stored
        now = view.describe(job)
        key = {k: v for k, v in now.items() if k not in ("elapsed", "eta")}
        if key != shown:  # once at the start, then on every change
            yield {"event": "state", "data": dumps(now)}
            shown = key
        for p in store.points(job_id, after):
            yield {"event": "step", "id": str(p["step"]), "data": dumps(p)}
            after = p["step"]
        if job["state"] in FINISHED:
            yield {"event": "end", "data": dumps(now)}
            return
        await asyncio.sleep(poll)
