"""The HTTP client of a `connectome serve` server: requests with the bearer token, every reply
checked before it is used, a job's events followed across restarts, a finished job's files fetched.

Whatever a server answers (an error page, a reply of another program, a malformed job) becomes one
line naming what is wrong, never a traceback. The commands of connectome.cli.serve print what this
returns.
"""

import json
import time
from collections.abc import Iterator
from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.serve.extra import need

httpx = need("httpx")
pydantic = need("pydantic")

# The names the server serves (its SAFE_NAME, no hidden file): a name in a reply is written in
# --out as it is, so it is never a path, nor the folder's marker or a temporary file.
FILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$"
RECONNECTS = 30  # failed connections in a row before a followed job's server counts as lost


class File(pydantic.BaseModel, strict=True):
    name: str = pydantic.Field(pattern=FILE_NAME)
    size: int = pydantic.Field(ge=0)
    url: str = pydantic.Field(max_length=4096)


class Job(pydantic.BaseModel, strict=True):
    """A job's row as the commands print it."""
    id: int
    state: str = pydantic.Field(pattern=r"^[a-z]{1,40}$")  # echoed in an error: one short word
    model: str | None
    remove: str | None
    removed: int | None
    target: int | None
    top1: float | None
    elapsed: float | None


class FinishedJob(pydantic.BaseModel, strict=True):
    state: str = pydantic.Field(pattern=r"^[a-z]{1,40}$")
    files: list[File]


class JobList(pydantic.BaseModel, strict=True):
    jobs: list[Job]


def connect(server: str, token: str | None):
    """An httpx client of `server`; the token goes to that origin only."""
    try:  # a malformed address is the user's typo: one line, not httpx's traceback
        url = httpx.URL(server)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise ConnectomeError(f"--server {server!r} is not a URL ({e})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConnectomeError(f"--server {server!r} is not an http(s) URL")
    return httpx.Client(base_url=server.rstrip("/"), auth=_bearer_for(url, token) if token else None, timeout=30)


def _origin(url) -> tuple:
    return url.scheme, url.host, url.port  # httpx gives no port where it is the scheme's default


def _bearer_for(server, token: str):
    """The token for requests to the origin the user named only: a URL that a reply names, on another
    host, port or scheme, gets none. On a redirect httpx drops it itself where the origin changes."""
    def auth(request):
        if _origin(request.url) == _origin(server):
            request.headers["Authorization"] = f"Bearer {token}"
        return request
    return auth


def one_line(text, limit: int = 300) -> str:
    """A server's words as one line of an error, however many lines or megabytes it sent."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def request(client, method: str, path: str, **kw):
    """The JSON reply; an error status, an unreachable server or a reply that is not JSON: one line."""
    try:
        r = client.request(method, path, **kw)
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        raise ConnectomeError(f"cannot reach {client.base_url} ({one_line(e)})") from None
    try:
        body = r.json()
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested past Python's stack
        body = None
    if r.status_code >= 300:  # redirects are not followed: the API answers at the address given
        detail = body.get("detail") if isinstance(body, dict) else None
        lines = r.text.strip().splitlines()
        raise ConnectomeError(f"{r.status_code}: {one_line(detail or (lines[0] if lines else r.reason_phrase))}")
    if body is None:
        raise ConnectomeError(f"{r.url}: the reply is not JSON: is --server {client.base_url} a connectome server?")
    return body


def checked(model, reply, where: str, what: str):
    """`reply` as `model`, checked whole before anything is used: one line naming the field if not."""
    try:
        return model.model_validate(reply)
    except pydantic.ValidationError as e:
        error = e.errors()[0]
        field = ".".join(map(str, error["loc"])) or "the reply"
        raise ConnectomeError(f"{where}: the reply is not {what} ({one_line(field, 80)}: {one_line(error['msg'], 120)}): "
                              f"is --server a connectome server?") from None


def submit(client, body: dict) -> Job:
    return checked(Job, request(client, "POST", "/api/jobs", json=body), f"{client.base_url}/api/jobs", "a job")


def list_jobs(client) -> list[Job]:
    reply = request(client, "GET", "/api/jobs")
    return checked(JobList, reply, f"{client.base_url}/api/jobs", "a list of jobs").jobs


def cancel(client, job_id: int) -> Job:
    where = f"{client.base_url}/api/jobs/{job_id}/cancel"
    return checked(Job, request(client, "POST", f"/api/jobs/{job_id}/cancel"), where, "a job")


def finished_job(client, job_id: int) -> FinishedJob:
    where = f"{client.base_url}/api/jobs/{job_id}"
    job = checked(FinishedJob, request(client, "GET", f"/api/jobs/{job_id}"), where, "a job")
    names = [f.name for f in job.files]
    if len(set(names)) < len(names):
        raise ConnectomeError(f"{where}: the reply lists a file twice: is --server a connectome server?")
    if job.state != "done":
        raise ConnectomeError(f"job {job_id} is {job.state}: only a finished job has files")
    return job


def download_files(client, job: FinishedJob, out: Path) -> Iterator[File]:
    """Each of the job's files into `out`, yielded once written."""
    from connectome.io import atomic_path

    for f in job.files:
        try:  # atomic: a failed file leaves what was there as it was
            with atomic_path(out / f.name) as tmp, client.stream("GET", f.url, follow_redirects=True) as r:
                if r.status_code != 200:
                    raise ConnectomeError(f"{r.status_code}: the server did not send {f.name} ({one_line(r.url, 200)})")
                _write_bounded(r, tmp, f)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise ConnectomeError(f"cannot download {f.name} from {one_line(f.url, 200)} ({one_line(e)})") from None
        yield f


def _write_bounded(r, tmp: Path, f: File) -> None:
    """The body, which must be the size the listing says: a server that sends more is stopped there."""
    written = 0
    with open(tmp, "wb") as fh:
        for chunk in r.iter_bytes():
            written += len(chunk)
            if written > f.size:
                raise ConnectomeError(f"{f.name}: the server sent more than the {f.size:,} bytes its listing says")
            fh.write(chunk)
    if written != f.size:
        raise ConnectomeError(f"{f.name}: the server sent {written:,} bytes, its listing says {f.size:,}: download it again")


def job_events(client, job_id: int) -> Iterator[tuple[str, dict]]:
    """(event, data) of a job's server-sent events, `step`, `state` and last `end`, reconnecting (from
    the last step seen) if the server restarts."""
    from httpx_sse import connect_sse

    last_id, failures = None, 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with connect_sse(client, "GET", f"/api/jobs/{job_id}/events", headers=headers,
                             timeout=httpx.Timeout(30, read=None)) as source:
                for event in source.iter_sse():
                    failures = 0
                    if event.event not in ("step", "state", "end"):
                        continue  # a keep-alive ping arrives as an empty "message"
                    if event.event == "step":
                        last_id = event.id
                    yield event.event, json.loads(event.data)
                    if event.event == "end":
                        return
        except httpx.HTTPError:
            failures += 1
            if failures > RECONNECTS:
                raise ConnectomeError(f"lost the server at {client.base_url}") from None
            time.sleep(2)
