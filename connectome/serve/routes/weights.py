"""Published weights: publish a finished job into the served registry, list it, serve its files."""

import errno
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import FileResponse

from connectome.errors import ConnectomeError
from connectome.serve.deps import Authorized, Runner, Store, job_of
from connectome.serve.replies import json_response, safe_file

router = APIRouter()


def weights_dir(request: Request) -> Path:
    return request.app.state.root / "weights"


@router.post("/api/jobs/{job_id:jobid}/publish", status_code=201, dependencies=Authorized)
def publish(job_id: int, request: Request, store: Store, scheduler: Runner,
            body: dict[str, Any] = Body(..., examples=[{"name": "lenet_300_100.my_tag"}])) -> dict:
    """Publish a finished run into the served registry, as hash-named files under /weights/."""
    from connectome.weights import publish as publish_run

    job = job_of(job_id, store)  # here, not as a dependency: a malformed body is refused first
    if job["state"] != "done":
        raise HTTPException(409, f"job {job_id} is {job['state']}, not done")
    if not isinstance(body.get("name"), str):
        raise HTTPException(400, "give the weights a name: {\"name\": \"arch.tag\"}")
    try:
        return publish_run(scheduler.run_dir(job_id), body["name"], registry=weights_dir(request) / "registry.json")
    except ConnectomeError as e:
        raise HTTPException(400, str(e)) from None
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        # The name is part of the published files' names; the file system caps their length.
        raise HTTPException(400, f"name {body['name'][:40]!r}... ({len(body['name'])} characters) is too long "
                                 f"for the published files' names ({e.strerror}): use a shorter arch.tag") from None


@router.get("/api/weights")
def list_weights(request: Request):
    from connectome.weights import read_registry, summary

    registry = weights_dir(request) / "registry.json"
    entries, _ = read_registry(registry) if registry.is_file() else ({}, None)
    rows = []
    for name, e in entries.items():
        try:
            w = summary(name, e)
        except ConnectomeError as err:  # one malformed entry is shown as such, the others still listed
            rows.append({"name": name, "error": str(err)})
            continue
        w["url"], w["mask_url"] = (f"/weights/{Path(w[k]).name}" for k in ("url", "mask_url"))  # hosted here
        rows.append(w)
    return json_response({"weights": rows})


@router.get("/weights/{name}")
def weights_file(name: str, request: Request):
    return FileResponse(safe_file(weights_dir(request), name))
