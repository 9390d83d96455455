"""/api/jobs: submit, list, show and cancel jobs, read their logs and fetch their files."""

from typing import Any

from fastapi import APIRouter, Body, HTTPException, Query
from fastapi.responses import FileResponse, PlainTextResponse

from connectome.errors import ConnectomeError
from connectome.serve import spec as job_spec
from connectome.serve.deps import Authorized, PathJob, Runner, ServerPolicy, Store, View, job_of
from connectome.serve.replies import json_response, safe_file
from connectome.serve.schema import job_body_schema

EXAMPLE = {"command": "prune", "model": "lenet_300_100", "remove": "50%", "calib_samples": 5000}
router = APIRouter(prefix="/api/jobs")


@router.get("")
def list_jobs(store: Store, view: View):
    return json_response({"jobs": [view.describe(j) for j in store.all()]})


@router.post("", status_code=201, dependencies=Authorized,
             openapi_extra={"requestBody": {"content": {"application/json": {"schema": job_body_schema()}}}})
def submit(store: Store, view: View, policy: ServerPolicy, body: dict[str, Any] = Body(..., examples=[EXAMPLE])):
    """Queue a prune job: the fields are the settings of `connectome prune` (its long options with
    underscores), optionally over a `recipe`; a bad one is refused with 400 naming it."""
    try:
        job = job_spec.parse(body, policy)
    except ConnectomeError as e:  # one line; a lone surrogate a client sent is shown escaped, not a 500
        raise HTTPException(400, str(e).encode("utf-8", "backslashreplace").decode()) from None
    job_id = store.add("prune", job.spec, job.settings.model, job.settings.remove)
    return json_response(view.describe(store.get(job_id)), status_code=201)


@router.get("/{job_id:jobid}")
def get_job(job: PathJob, view: View):
    return json_response(view.describe(job, detail=True))


@router.post("/{job_id:jobid}/cancel", dependencies=Authorized)
def cancel(job: PathJob, store: Store, scheduler: Runner, view: View):
    if not scheduler.cancel(job["id"]):
        raise HTTPException(409, f"job {job['id']} has already ended ({store.get(job['id'])['state']})")
    return json_response(view.describe(store.get(job["id"])))


@router.get("/{job_id:jobid}/files/{name}")
def job_file(job_id: int, name: str, store: Store, scheduler: Runner, view: View):
    """A file of a finished job, one of those its listing shows."""
    job = job_of(job_id, store)  # a plain call keeps the path's parameters in their order
    if name not in {f.name for f in view.files_of(job)}:
        raise HTTPException(404, f"no file {name!r}")
    return FileResponse(safe_file(scheduler.run_dir(job["id"]), name))


@router.get("/{job_id:jobid}/log", response_class=PlainTextResponse)
def job_log(job: PathJob, scheduler: Runner, lines: int = Query(200, ge=1, le=10000)) -> str:
    """The last lines of the job's worker output (its `connectome prune` process, every attempt)."""
    return scheduler.log_tail(job["id"], lines)
