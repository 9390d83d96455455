"""`connectome serve` (the job service) and its client's commands: `submit`, `jobs`, `cancel`,
`download` (their requests are connectome.serve.client's).

The server and client need the `serve` extra (`pip install 'connectome[serve]'`)."""

import math
from pathlib import Path

import click

from connectome.cli.options import settings_options
from connectome.errors import ConnectomeError
from connectome.pruning.settings import PruneSettings
from connectome.serve.extra import need
from connectome.serve.policy import DEFAULT_MAX_WORK, MAX_WORK
from connectome.serve.tokens import client_token, read_or_create_token, readable_by_others
from connectome.settings import parse_flag

DEFAULT_PORT = 8470


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

    uvicorn = need("uvicorn")
    need("fastapi")
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
    if not created and readable_by_others(token_path):
        click.echo(f"warning: {token_path} is readable by others (chmod 600 {token_path})", err=True)
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

server_options = [
    click.option("--server", envvar="CONNECTOME_SERVER", default=f"http://127.0.0.1:{DEFAULT_PORT}", show_default=True),
    click.option("--token", envvar="CONNECTOME_TOKEN", default=None, help="Bearer token (or $CONNECTOME_TOKEN)."),
    click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None, help="Read the token from a file."),
]


def with_server_options(f):
    for option in reversed(server_options):
        f = option(f)
    return f


def _fmt(job) -> str:
    """A job's row (connectome.serve.client.Job) as `jobs` lists it."""
    removed = f"{job.removed:,}" if job.removed is not None else "-"
    target = f"{job.target:,}" if job.target else str(job.remove or "-")
    top1 = f"{job.top1:.2f}%" if job.top1 is not None else "-"
    elapsed = f"{job.elapsed:.0f}s" if job.elapsed is not None else "-"
    return f"{job.id:>4}  {job.state:<9}  {(job.model or '-')[:28]:<28}  {removed:>10} / {target:<10}  {top1:>7}  {elapsed:>6}"


@click.group()
@with_server_options
@click.pass_context
def submit(ctx, server, token, token_file):
    """Submit a job to a `connectome serve` server."""
    ctx.obj = {"server": server, "token": client_token(token, token_file)}


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
    from connectome.serve import client as api

    with api.connect(ctx.obj["server"], ctx.obj["token"]) as client:
        job = api.submit(client, body)
        click.echo(f"job {job.id} queued: {job.model}, remove {job.remove}  ({ctx.obj['server']}/#job={job.id})")
        if follow:
            job = api.checked(api.Job, follow_job(client, job.id), f"{client.base_url}/api/jobs/{job.id}/events", "a job")
            click.echo(_fmt(job))
            if job.state != "done":
                raise SystemExit(1)


def follow_job(client, job_id: int) -> dict:
    """A progress bar fed by the job's events until it ends; the job as it ended."""
    from tqdm.auto import tqdm

    from connectome.serve.client import job_events

    bar = tqdm(desc=f"job {job_id}", unit="w", total=None)
    try:
        for event, data in job_events(client, job_id):
            if event == "step":
                bar.n = data["removed"]
                bar.set_postfix(top1=f"{data['top1']:.2f}", loss=f"{data['loss']:.4f}")
                bar.refresh()
            elif data["target"] and bar.total != data["target"]:
                bar.total = data["target"]
                bar.refresh()
            if event == "end":
                return data
    finally:
        bar.close()


@click.command()
@with_server_options
def jobs(server, token, token_file):
    """List the jobs of a server."""
    from connectome.serve import client as api

    with api.connect(server, client_token(token, token_file)) as client:
        rows = api.list_jobs(client)
    click.echo(f"{'id':>4}  {'state':<9}  {'model':<28}  {'removed':>10} / {'target':<10}  {'top-1':>7}  {'time':>6}")
    for job in rows:
        click.echo(_fmt(job))


@click.command()
@click.argument("job_id", type=int)
@with_server_options
def cancel(job_id, server, token, token_file):
    """Cancel a queued or running job."""
    from connectome.serve import client as api

    with api.connect(server, client_token(token, token_file)) as client:
        job = api.cancel(client, job_id)
    click.echo(f"job {job.id}: {job.state}")


@click.command()
@click.argument("job_id", type=int)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder (default: runs/job-<ID>).")
@with_server_options
def download(job_id, out, server, token, token_file):
    """Download a finished job's run folder (model, mask, curve, manifest) from a server."""
    from connectome.io import check_folder, claimed_folder
    from connectome.serve import client as api

    out = Path(out or f"runs/job-{job_id}")
    check_folder(out)  # a folder of someone else's files is not written over
    with api.connect(server, client_token(token, token_file)) as client:
        job = api.finished_job(client, job_id)
        with claimed_folder(out):
            for f in api.download_files(client, job, out):
                click.echo(f"  {out / f.name} ({f.size:,} bytes)")
