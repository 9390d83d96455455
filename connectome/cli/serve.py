"""`connectome serve` (the job service) and its client: `submit`, `jobs`, `cancel`.

The server and client need the `serve` extra (`pip install 'connectome[serve]'`)."""

import math
import os
import re
import secrets
import stat
import time
from pathlib import Path

import click

from connectome.cli.options import settings_options
from connectome.errors import ConnectomeError
from connectome.pruning.settings import PruneSettings
from connectome.serve.policy import DEFAULT_MAX_WORK, MAX_WORK
from connectome.settings import parse_flag

DEFAULT_PORT = 8470


def _need(module: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConnectomeError(f"{module} is missing: pip install 'connectome[serve]'") from None


TOKEN_FILE_LIMIT = 4096  # a token file holds one short line: /dev/zero is not read for ever


def check_token(token: str, what: str) -> str:
    """A bearer token as an HTTP header can carry it: one word of visible ASCII (RFC 6750)."""
    if not token:
        raise ConnectomeError(f"{what} is empty: it must hold the token, on one line")
    lines = token.splitlines()
    if len(lines) > 1:
        raise ConnectomeError(f"{what} holds {len(lines)} lines: it must hold the token alone, on one line")
    if not re.fullmatch(r"[!-~]+", token):
        raise ConnectomeError(f"{what} holds spaces, control characters or non-ASCII letters: "
                              f"a token is one word of visible ASCII")
    return token


def read_token_file(path: Path) -> str:
    """The token a file holds (a trailing newline aside), the same rules for the server and its clients."""
    if not path.is_file():  # a FIFO or a device would block or never end
        raise ConnectomeError(f"token file {path} is not a file")
    try:
        with open(path, "rb") as f:
            data = f.read(TOKEN_FILE_LIMIT + 1)
    except OSError as e:
        raise ConnectomeError(f"token file {path} is unreadable ({e.strerror})") from None
    if len(data) > TOKEN_FILE_LIMIT:
        raise ConnectomeError(f"token file {path} is over {TOKEN_FILE_LIMIT} bytes: it must hold the token alone, on one line")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConnectomeError(f"token file {path} holds bytes that are not ASCII: a token is one word of visible ASCII") from None
    return check_token(text.strip(), f"token file {path}")


def read_or_create_token(path: Path) -> tuple[str, bool]:
    """The token in `path`; a new random one, written with mode 0600, if the file is missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = read_token_file(path)
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            click.echo(f"warning: {path} is readable by others (chmod 600 {path})", err=True)
        return token, False
    except OSError as e:  # no such folder, no permission: the server cannot keep its token there
        raise ConnectomeError(f"token file {path}: {e.strerror}") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


@click.command()
@click.option("--root", type=click.Path(file_okay=False), required=True, help="Folder of the jobs database, runs and weights.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="0 picks a free port.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None, help="Bearer token (default: ROOT/token, created if missing).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Jobs run at once.")
@click.option("--data-root", multiple=True, type=click.Path(exists=True, file_okay=False), help="Folder jobs may read data and weights files from (repeatable).")
@click.option("--allow-user-code", is_flag=True, help="Accept package.module:function models (they import code).")
@click.option("--max-nproc", type=click.IntRange(min=1), default=None, help="Largest nproc_per_node of a job (default: the number of GPUs, at least 1).")
@click.option("--max-work", type=float, default=DEFAULT_MAX_WORK, show_default=True,
              help=f"Most images through the model one job may ask for (training passes, statistics, evaluations, "
                   f"acceptance checks), from 1 to {MAX_WORK:g}; a job over it gets 400.")
def serve(root, host, port, token_file, workers, data_root, allow_user_code, max_nproc, max_work):
    """Run the pruning service: a job queue, live curves on a web page, hosted weights."""
    import socket

    # Checked here, not by click.FloatRange: NaN passes its comparisons, and the server then refused
    # every job; and the answer is one line, as for every other bad value of the service.
    if not 1 <= max_work <= MAX_WORK:
        raise ConnectomeError(f"--max-work {max_work:g}: give the most images one job may pass through the model, "
                              f"a number from 1 to {MAX_WORK:g} (default {DEFAULT_MAX_WORK:g})")

    uvicorn = _need("uvicorn")
    _need("fastapi")
    from connectome.serve.app import create_app
    from connectome.serve.spec import Policy

    from connectome.serve import root as root_lock

    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConnectomeError(f"--root {root}: {e.strerror}") from None
    held = root_lock.hold(root)  # noqa: F841 (held until the process ends: a second server is refused)
    token_path = Path(token_file) if token_file else root / "token"
    token, created = read_or_create_token(token_path)
    import torch
    gpus = torch.cuda.device_count()
    if max_nproc is None:
        max_nproc = max(1, gpus)
    policy = Policy(allow_user_code, tuple(Path(r).resolve() for r in data_root), max_nproc, gpus, max_work)
    # Bind here, so that --port 0 can print the port it got before the server starts.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise ConnectomeError(f"cannot listen on {host}:{port} ({e.strerror})") from None
    sock.listen(2048)  # connections made while the server starts wait in the backlog, not refused
    port = sock.getsockname()[1]
    app = create_app(root, token, policy, workers, gpus=gpus)
    click.echo(f"token {'written to' if created else 'read from'} {token_path}", err=True)
    click.echo(f"serving on http://{host if family == socket.AF_INET else f'[{host}]'}:{port}  (root {root})", err=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


# --- the client ---------------------------------------------------------------------------------

def _client(server: str, token: str | None):
    httpx = _need("httpx")
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


def _one_line(text, limit: int = 300) -> str:
    """A server's words as one line of an error, however many lines or megabytes it sent."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _request(client, method: str, path: str, **kw):
    httpx = _need("httpx")
    try:
        r = client.request(method, path, **kw)
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        raise ConnectomeError(f"cannot reach {client.base_url} ({_one_line(e)})") from None
    try:
        body = r.json()
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested past Python's stack
        body = None
    if r.status_code >= 300:  # redirects are not followed: the API answers at the address given
        detail = body.get("detail") if isinstance(body, dict) else None
        lines = r.text.strip().splitlines()
        raise ConnectomeError(f"{r.status_code}: {_one_line(detail or (lines[0] if lines else r.reason_phrase))}")
    if body is None:
        raise ConnectomeError(f"{r.url}: the reply is not JSON: is --server {client.base_url} a connectome server?")
    return body


server_options = [
    click.option("--server", envvar="CONNECTOME_SERVER", default=f"http://127.0.0.1:{DEFAULT_PORT}", show_default=True),
    click.option("--token", envvar="CONNECTOME_TOKEN", default=None, help="Bearer token (or $CONNECTOME_TOKEN)."),
    click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None, help="Read the token from a file."),
]


def with_server_options(f):
    for option in reversed(server_options):
        f = option(f)
    return f


def _token(token, token_file):
    if token is not None:
        return check_token(token, "--token (or $CONNECTOME_TOKEN)")
    return read_token_file(Path(token_file)) if token_file else None


def _fmt(job: dict) -> str:
    removed = f"{job['removed']:,}" if job["removed"] is not None else "-"
    target = f"{job['target']:,}" if job["target"] else str(job["remove"] or "-")
    top1 = f"{job['top1']:.2f}%" if job["top1"] is not None else "-"
    elapsed = f"{job['elapsed']:.0f}s" if job["elapsed"] is not None else "-"
    return f"{job['id']:>4}  {job['state']:<9}  {(job['model'] or '-')[:28]:<28}  {removed:>10} / {target:<10}  {top1:>7}  {elapsed:>6}"


@click.group()
@with_server_options
@click.pass_context
def submit(ctx, server, token, token_file):
    """Submit a job to a `connectome serve` server."""
    ctx.obj = {"server": server, "token": _token(token, token_file)}


def job_fields(cls, params: dict) -> dict:
    """The settings given as flags, as JSON fields typed as the settings are (numbers as numbers,
    lists as lists); values are not checked here: the server checks them and names the field."""
    out = {}
    for spec in cls.specs():
        value = params.get(spec.name)
        if value is None or value == ():
            continue
        if spec.is_list:
            value = [v.strip() for item in value for v in item.split(",") if v.strip()]
        elif isinstance(value, str):
            number = parse_flag(spec, value)
            # JSON has no Infinity: a non-finite number goes as written, for the server to refuse
            value = number if not isinstance(number, float) or math.isfinite(number) else value
        out[spec.name] = value
    return out


def _job_settings() -> tuple[str, ...]:
    """Settings a service job may not set: no option for them."""
    return tuple(s.name for s in PruneSettings.specs() if not s.meta["server"])


@submit.command("prune")
@settings_options(PruneSettings, skip=_job_settings())
@click.option("--recipe", default=None, help="A recipe of the project (or a file under a data root of the server); "
                                             "flags override it.")
@click.option("--nproc-per-node", type=int, default=None, help="Ranks under torchrun on the server.  [default: 1]")
@click.option("--follow", is_flag=True, help="Show a progress bar until the job ends.")
@click.pass_context
def submit_prune(ctx, recipe, nproc_per_node, follow, **params):
    """The settings of `connectome prune` as flags: those given are sent, the server checks them and
    fills in the rest."""
    body = {"command": "prune", **job_fields(PruneSettings, params)}
    if recipe is not None:
        body["recipe"] = recipe
    if nproc_per_node is not None:
        body["nproc_per_node"] = nproc_per_node
    with _client(ctx.obj["server"], ctx.obj["token"]) as client:
        job = _request(client, "POST", "/api/jobs", json=body)
        click.echo(f"job {job['id']} queued: {job['model']}, remove {job['remove']}  ({ctx.obj['server']}/#job={job['id']})")
        if follow:
            job = follow_job(client, job["id"])
            click.echo(_fmt(job))
            if job["state"] != "done":
                raise SystemExit(1)


def follow_job(client, job_id: int) -> dict:
    """A progress bar fed by the job's server-sent events, reconnecting if the server restarts."""
    from httpx_sse import connect_sse
    from tqdm.auto import tqdm
    import httpx
    import json

    bar = tqdm(desc=f"job {job_id}", unit="w", total=None)
    last_id, failures = None, 0
    try:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with connect_sse(client, "GET", f"/api/jobs/{job_id}/events", headers=headers,
                                 timeout=httpx.Timeout(30, read=None)) as source:
                    for event in source.iter_sse():
                        failures = 0
                        if event.event not in ("step", "state", "end"):
                            continue  # a keep-alive ping arrives as an empty "message"
                        data = json.loads(event.data)
                        if event.event == "step":
                            last_id = event.id
                            bar.n = data["removed"]
                            bar.set_postfix(top1=f"{data['top1']:.2f}", loss=f"{data['loss']:.4f}")
                            bar.refresh()
                        elif event.event in ("state", "end"):
                            if data["target"] and bar.total != data["target"]:
                                bar.total = data["target"]
                                bar.refresh()
                            if event.event == "end":
                                return data
            except httpx.HTTPError:
                failures += 1
                if failures > 30:
                    raise ConnectomeError(f"lost the server at {client.base_url}") from None
                time.sleep(2)
    finally:
        bar.close()


@click.command()
@with_server_options
def jobs(server, token, token_file):
    """List the jobs of a server."""
    with _client(server, _token(token, token_file)) as client:
        rows = _request(client, "GET", "/api/jobs")["jobs"]
    click.echo(f"{'id':>4}  {'state':<9}  {'model':<28}  {'removed':>10} / {'target':<10}  {'top-1':>7}  {'time':>6}")
    for job in rows:
        click.echo(_fmt(job))


@click.command()
@click.argument("job_id", type=int)
@with_server_options
def cancel(job_id, server, token, token_file):
    """Cancel a queued or running job."""
    with _client(server, _token(token, token_file)) as client:
        job = _request(client, "POST", f"/api/jobs/{job_id}/cancel")
    click.echo(f"job {job['id']}: {job['state']}")


@click.command()
@click.argument("job_id", type=int)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder (default: runs/job-<ID>).")
@with_server_options
def download(job_id, out, server, token, token_file):
    """Download a finished job's run folder (model, mask, curve, manifest) from a server."""
    from connectome.io import check_folder, claimed_folder

    out = Path(out or f"runs/job-{job_id}")
    check_folder(out)  # a folder of someone else's files is not written over
    with _client(server, _token(token, token_file)) as client:
        job = _finished_job(_request(client, "GET", f"/api/jobs/{job_id}"), f"{client.base_url}/api/jobs/{job_id}")
        if job.state != "done":
            raise ConnectomeError(f"job {job_id} is {job.state}: only a finished job has files")
        with claimed_folder(out):
            _download_files(client, job, out)


# The names the server serves (its SAFE_NAME, no hidden file): a name in a reply is written in
# --out as it is, so it is never a path, nor the folder's marker or a temporary file.
FILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$"


def _finished_job(reply, where: str):
    """A job's reply checked whole before anything is written: one line naming the field if not."""
    pydantic = _need("pydantic")

    class File(pydantic.BaseModel, strict=True):
        name: str = pydantic.Field(pattern=FILE_NAME)
        size: int = pydantic.Field(ge=0)
        url: str = pydantic.Field(max_length=4096)

    class Job(pydantic.BaseModel, strict=True):
        state: str = pydantic.Field(pattern=r"^[a-z]{1,40}$")  # echoed in an error: one short word
        files: list[File]

    try:
        job = Job.model_validate(reply)
    except pydantic.ValidationError as e:
        error = e.errors()[0]
        field = ".".join(map(str, error["loc"])) or "the reply"
        raise ConnectomeError(f"{where}: the reply is not a job ({_one_line(field, 80)}: {error['msg']}): "
                              f"is --server a connectome server?") from None
    names = [f.name for f in job.files]
    if len(set(names)) < len(names):
        raise ConnectomeError(f"{where}: the reply lists a file twice: is --server a connectome server?")
    return job


def _download_files(client, job, out: Path) -> None:
    from connectome.io import atomic_path

    import httpx

    for f in job.files:
        try:  # atomic: a failed file leaves what was there as it was
            with atomic_path(out / f.name) as tmp, client.stream("GET", f.url, follow_redirects=True) as r:
                if r.status_code != 200:
                    raise ConnectomeError(f"{r.status_code}: the server did not send {f.name} ({_one_line(r.url, 200)})")
                _write_bounded(r, tmp, f)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise ConnectomeError(f"cannot download {f.name} from {_one_line(f.url, 200)} ({_one_line(e)})") from None
        click.echo(f"  {out / f.name} ({f.size:,} bytes)")


def _write_bounded(r, tmp: Path, f) -> None:
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
