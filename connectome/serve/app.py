"""The HTTP API of `connectome serve` (FastAPI; its OpenAPI page is /docs).

Reads are open to anyone who can reach the server (it binds to 127.0.0.1 unless told otherwise);
every request that changes something needs the bearer token. Files are only ever served from two
folders, by plain names checked against both the name and the resolved path; of a run folder, only
the files its job's listing shows. Job ids in paths are decimal integers; one that SQLite cannot
hold names no job (404). Every answer is strict JSON: a stored row that cannot be shown is listed
with its error, never a failed listing.
"""

import asyncio
import dataclasses
import errno
import hmac
import json
import math
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from sse_starlette.sse import EventSourceResponse
from starlette.convertors import Convertor, register_url_convertor

from connectome.errors import ConnectomeError
from connectome.serve import spec as job_spec
from connectome.serve.jobs import FINISHED, STATES, JobStore
from connectome.serve.worker import JOB_FILE, Scheduler

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 64 * 1024  # a job spec is a few hundred bytes
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")
EXAMPLE = {"command": "prune", "model": "lenet_300_100", "remove": "50%", "calib_samples": 5000}
NOT_SERVED = {"state.safetensors", JOB_FILE}  # the run's working state and the job's own settings
SUMMARY_KEYS = ("id", "state", "command", "spec", "model", "remove", "target", "prunable", "removed", "top1", "loss",
                "steps", "created", "started", "finished", "elapsed", "eta", "error")


class JobId(Convertor):
    """`{job_id:jobid}`: decimal digits only (`6.0`, `-1`, `1e3` match no route: 404)."""
    regex = "[0-9]{1,30}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("jobid", JobId())


def finite(value):
    """`value` with every non-finite float replaced by None (JSON has no NaN nor Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:  # a NaN loss, an Infinity a damaged row holds
        return json.dumps(finite(value), allow_nan=False)


def json_response(value, status_code: int = 200) -> Response:
    return Response(dumps(value), status_code=status_code, media_type="application/json")


def job_schema_body() -> dict:
    """The request body of POST /api/jobs for the OpenAPI page: the settings' JSON Schema and the
    server's own keys."""
    from connectome.pruning.settings import PruneSettings
    from connectome.settings import job_schema

    schema = job_schema(PruneSettings)
    schema["properties"] = {
        "command": {"type": "string", "enum": ["prune"], "default": "prune"},
        "recipe": {"type": "string", "description": "A recipe of the project (or a file under a data root); "
                                                    "the body's fields override it."},
        "nproc_per_node": {"type": "integer", "minimum": 1, "default": 1, "description": "Ranks under torchrun."},
        **schema["properties"]}
    schema["description"] = "model and remove are required, in the body or in the recipe."
    schema["required"] = []
    return {"requestBody": {"content": {"application/json": {"schema": schema}}}}


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413), whether or not they declare their length."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                return await too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        # No declared length (chunked): read it here, up to the limit, then hand it on whole.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_large(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def safe_file(folder: Path, name: str) -> Path:
    """`folder/name` if it is a plain file directly inside `folder`; 404 for anything else."""
    path = folder / name
    if (not SAFE_NAME.fullmatch(name) or ".." in name or path.is_symlink() or not path.is_file()
            or not path.resolve().is_relative_to(folder.resolve())):
        raise HTTPException(404, f"no file {name!r}")
    return path


def create_app(root: Path, token: str, policy: job_spec.Policy, workers: int = 1, poll: float = 0.5,
               gpus: int = 0) -> FastAPI:
    root = Path(root).resolve()
    policy = dataclasses.replace(policy, gpus=gpus)
    store = JobStore(root / "jobs.sqlite")
    scheduler = Scheduler(store, root, workers, poll, gpus, policy)
    weights_dir = root / "weights"
    registry = weights_dir / "registry.json"

    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="connectome", summary="Prune pretrained networks by zeroing weights: a job queue.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.state.store, app.state.scheduler = store, scheduler
    bearer = HTTPBearer(auto_error=False)

    def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def malformed(request, exc):  # FastAPI answers 422 with a list; one clear message instead
        e = exc.errors()[0]
        if e["loc"][0] == "body":
            return JSONResponse({"detail": "the body must be a JSON object"}, status_code=400)
        return JSONResponse({"detail": f"{e['loc'][-1]}: {e['msg']}"}, status_code=400)

    def job_or_404(job_id: int) -> dict:
        job = store.get(job_id)  # None for ids SQLite cannot hold, too
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    def files_of(job: dict) -> list[Path]:
        """The files a job serves: a finished run's results (not its state, job file or lock)."""
        folder = scheduler.run_dir(job["id"])
        if job["state"] != "done" or not folder.is_dir():
            return []
        return [f for f in sorted(folder.iterdir()) if SAFE_NAME.fullmatch(f.name) and not f.name.startswith(".")
                and f.name not in NOT_SERVED and not f.is_symlink() and f.is_file()]

    def job_summary(job: dict, detail: bool = False) -> dict:
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
            out["points"] = store.points(job["id"])
            out["files"] = [{"name": f.name, "size": f.stat().st_size, "url": f"/api/jobs/{job['id']}/files/{f.name}"}
                            for f in files_of(job)]
        return out

    def describe(job: dict, detail: bool = False) -> dict:
        """A job as the API shows it; a row that cannot be read (damaged, or from a foreign writer) is
        shown with its id, its state where valid, and what is wrong, so that no row breaks a listing."""
        try:
            return job_summary(job, detail)
        except Exception as e:
            out = dict.fromkeys(SUMMARY_KEYS)
            state = job.get("state")
            out.update(id=job.get("id"), state=state if state in STATES else "failed", steps=0,
                       error=f"this job's stored row is unreadable ({type(e).__name__})")
            if detail:
                out.update(points=[], files=[])
            return out

    # --- the page -------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs():  # FastAPI's OpenAPI page, with its assets served from here: a team server may be offline
        from fastapi.openapi.docs import get_swagger_ui_html
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="connectome API",
                                   swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="data:,")

    # --- jobs -----------------------------------------------------------------------------------

    @app.get("/api/jobs")
    def list_jobs():
        return json_response({"jobs": [describe(j) for j in store.all()]})

    @app.post("/api/jobs", status_code=201, dependencies=[Depends(require_token)], openapi_extra=job_schema_body())
    def submit(body: dict[str, Any] = Body(..., examples=[EXAMPLE])):
        """Queue a prune job: the fields are the settings of `connectome prune` (its long options with
        underscores), optionally over a `recipe`; a bad one is refused with 400 naming it."""
        try:
            job = job_spec.parse(body, policy)
        except ConnectomeError as e:  # one line; a lone surrogate a client sent is shown escaped, not a 500
            raise HTTPException(400, str(e).encode("utf-8", "backslashreplace").decode()) from None
        job_id = store.add("prune", job.spec, job.settings.model, job.settings.remove)
        return json_response(describe(store.get(job_id)), status_code=201)

    @app.get("/api/jobs/{job_id:jobid}")
    def get_job(job_id: int):
        return json_response(describe(job_or_404(job_id), detail=True))

    @app.post("/api/jobs/{job_id:jobid}/cancel", dependencies=[Depends(require_token)])
    def cancel(job_id: int):
        job = job_or_404(job_id)
        if not scheduler.cancel(job_id):
            raise HTTPException(409, f"job {job_id} has already ended ({store.get(job_id)['state']})")
        return json_response(describe(store.get(job["id"])))

    @app.get("/api/jobs/{job_id:jobid}/files/{name}")
    def job_file(job_id: int, name: str):
        """A file of a finished job, one of those its listing shows."""
        job = job_or_404(job_id)
        if name not in {f.name for f in files_of(job)}:
            raise HTTPException(404, f"no file {name!r}")
        return FileResponse(safe_file(scheduler.run_dir(job_id), name))

    @app.get("/api/jobs/{job_id:jobid}/log", response_class=PlainTextResponse)
    def job_log(job_id: int, lines: int = Query(200, ge=1, le=10000)) -> str:
        """The last lines of the job's worker output (its `connectome prune` process, every attempt)."""
        job_or_404(job_id)
        return scheduler.log_tail(job_id, lines)

    @app.get("/api/jobs/{job_id:jobid}/events")
    async def events(job_id: int, request: Request):
        """Server-sent events: `step` per accepted step, `state` on changes, `end` when the job ends."""
        job_or_404(job_id)
        last_id = request.headers.get("last-event-id", "")
        after = int(last_id) if re.fullmatch(r"[0-9]{1,18}", last_id) else -1  # a step number SQLite can compare

        async def stream():
            nonlocal after
            shown = None
            while True:
                job = store.get(job_id)  # read before the points: a finished job's points are all stored
                now = describe(job)
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

        return EventSourceResponse(stream(), ping=15)

    @app.post("/api/jobs/{job_id:jobid}/publish", status_code=201, dependencies=[Depends(require_token)])
    def publish(job_id: int, body: dict[str, Any] = Body(..., examples=[{"name": "lenet_300_100.my_tag"}])) -> dict:
        """Publish a finished run into the served registry, as hash-named files under /weights/."""
        from connectome.weights import publish as publish_run

        job = job_or_404(job_id)
        if job["state"] != "done":
            raise HTTPException(409, f"job {job_id} is {job['state']}, not done")
        if not isinstance(body.get("name"), str):
            raise HTTPException(400, "give the weights a name: {\"name\": \"arch.tag\"}")
        try:
            return publish_run(scheduler.run_dir(job_id), body["name"], registry=registry)
        except ConnectomeError as e:
            raise HTTPException(400, str(e)) from None
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise
            # The name is part of the published files' names; the file system caps their length.
            raise HTTPException(400, f"name {body['name'][:40]!r}... ({len(body['name'])} characters) is too long "
                                     f"for the published files' names ({e.strerror}): use a shorter arch.tag") from None

    # --- weights --------------------------------------------------------------------------------

    @app.get("/api/weights")
    def list_weights():
        from connectome.weights import read_registry, summary

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

    @app.get("/weights/{name}")
    def weights_file(name: str):
        return FileResponse(safe_file(weights_dir, name))

    return app
