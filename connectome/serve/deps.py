"""What the routes are given, as FastAPI dependencies: the server's job store, scheduler and policy
(which `create_app` keeps on `app.state`), the bearer-token check, and the job a path names."""

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from connectome.serve.jobs import JobStore
from connectome.serve.policy import Policy
from connectome.serve.views import JobView
from connectome.serve.worker import Scheduler


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


def get_policy(request: Request) -> Policy:
    return request.app.state.policy


Store = Annotated[JobStore, Depends(get_store)]
Runner = Annotated[Scheduler, Depends(get_scheduler)]
ServerPolicy = Annotated[Policy, Depends(get_policy)]


def get_view(store: Store, scheduler: Runner) -> JobView:
    return JobView(store, scheduler)


View = Annotated[JobView, Depends(get_view)]
bearer = HTTPBearer(auto_error=False)


def require_token(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    token = request.app.state.token
    if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


def job_of(job_id: int, store: Store) -> dict:
    """The job a path's `{job_id:jobid}` names; 404 where there is none (ids SQLite cannot hold, too)."""
    job = store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


PathJob = Annotated[dict, Depends(job_of)]
Authorized = [Depends(require_token)]
