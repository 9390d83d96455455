"""The HTTP API of `connectome serve` (FastAPI; its OpenAPI page is /docs).

Reads are open to anyone who can reach the server (it binds to 127.0.0.1 unless told otherwise);
every request that changes something needs the bearer token. Files are only ever served from two
folders, by plain names checked against both the name and the resolved path; of a run folder, only
the files its job's listing shows. Job ids in paths are decimal integers; one that SQLite cannot
hold names no job (404). Every answer is strict JSON: a stored row that cannot be shown is listed
with its error, never a failed listing.
"""

import dataclasses
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from connectome.serve.jobs import JobStore
from connectome.serve.policy import Policy
from connectome.serve.routes import events, jobs, page, weights
from connectome.serve.routes.page import STATIC
from connectome.serve.worker import Scheduler

MAX_BODY = 64 * 1024  # a job spec is a few hundred bytes


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


async def malformed(request, exc: RequestValidationError):
    """FastAPI answers 422 with a list; one clear message instead."""
    e = exc.errors()[0]
    if e["loc"][0] == "body":
        return JSONResponse({"detail": "the body must be a JSON object"}, status_code=400)
    return JSONResponse({"detail": f"{e['loc'][-1]}: {e['msg']}"}, status_code=400)


def create_app(root: Path, token: str, policy: Policy, workers: int = 1, poll: float = 0.5,
               gpus: int = 0) -> FastAPI:
    """The app; its routes find the store, scheduler, policy and token on `app.state` (connectome.serve.deps)."""
    root = Path(root).resolve()
    policy = dataclasses.replace(policy, gpus=gpus)
    store = JobStore(root / "jobs.sqlite")
    scheduler = Scheduler(store, root, workers, poll, gpus, policy)

    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="connectome", summary="Prune pretrained networks by zeroing weights: a job queue.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_exception_handler(RequestValidationError, malformed)
    app.state.store, app.state.scheduler, app.state.policy = store, scheduler, policy
    app.state.token, app.state.root, app.state.poll = token, root, poll
    for router in (page.router, jobs.router, events.router, weights.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app
