"""`connectome serve` as a real process on 127.0.0.1: jobs, auth, validation, files, SSE, restarts."""

import http.client
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.parse

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import write_idx  # noqa: E402
from serve_helpers import Server, data_root, server_fixture, small  # noqa: E402, F401 (data_root: a fixture)

from connectome.cli import main  # noqa: E402
from connectome.pruning.mask import Mask  # noqa: E402
from connectome.serve.worker import _processes_of  # noqa: E402

server = server_fixture()


def cli_run(out, data_root, spec):
    """The same job through `connectome prune`, in a process of its own."""
    args = [sys.executable, "-m", "connectome", "prune", spec["model"], "--out", str(out), "--quiet"]
    for k, v in spec.items():
        if k != "model":
            args += [f"--{k.replace('_', '-')}", str(v)]
    subprocess.run(args, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    return Mask.load(out / "mask.safetensors")


def same_mask(a: Mask, b: Mask) -> bool:
    return a == b and a.removed() == b.removed()


@pytest.mark.parametrize("method", [{}, {"method": "one-shot", "score": "wanda", "learn_points": 3}])
def test_a_job_runs_what_prune_runs(server, data_root, tmp_path, method):
    spec = small(data_root, **method)
    job = server.wait(server.submit(**spec)["id"])
    assert job["state"] == "done", job["error"]
    assert job["removed"] == job["target"] == round(0.02 * job["prunable"])
    assert len(job["points"]) >= 2 and job["points"][0]["removed"] == 0
    assert [p["step"] for p in job["points"]] == sorted({p["step"] for p in job["points"]})
    names = {f["name"] for f in job["files"]}
    assert {"model.safetensors", "mask.safetensors", "curve.csv", "curve.png", "manifest.json"} <= names
    served = server.request("GET", f"/api/jobs/{job['id']}/files/mask.safetensors", token=None)
    (tmp_path / "served.safetensors").write_bytes(served.content)
    assert same_mask(Mask.load(tmp_path / "served.safetensors"), cli_run(tmp_path / "cli", data_root, spec))


def test_writes_need_the_token_and_reads_do_not(server, data_root):
    n = len(server.request("GET", "/api/jobs", token=None).json()["jobs"])
    for token in (None, "wrong-token", server.token + "x"):
        r = server.request("POST", "/api/jobs", token=token, json={"command": "prune", **small(data_root)})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert server.request("POST", "/api/jobs/1/cancel", token=token).status_code == 401
        assert server.request("POST", "/api/jobs/1/publish", token=token, json={"name": "a.b"}).status_code == 401
    assert len(server.request("GET", "/api/jobs", token=None).json()["jobs"]) == n


@pytest.mark.parametrize("change, message", [
    ({"remove": "lots"}, "remove: malformed count"),
    ({"calib_samples": "many"}, "calib_samples must be an integer"),
    ({"criterion": "vibes"}, "criterion must be one of"),
    ({"model": "no_such_net"}, "unknown model"),
    ({"model": "os:system"}, "imports code"),
    ({"colour": "blue"}, "unknown setting 'colour'"),
    ({"out": "/tmp/x"}, "set by the server"),
    ({"include": {"a": 1}}, "must be a list"),
    ({"data": "mnist:/etc"}, "not an absolute path under a data root"),
    ({"data": "mnist:relative/idx"}, "not an absolute path under a data root"),
    ({"weights_file": "/etc/passwd"}, "not an absolute path under a data root"),
    ({"recipe": "../../../etc/passwd"}, "recipe"),
    ({"nproc_per_node": 64}, "nproc_per_node"),
    ({"command": "train"}, "unknown command"),
    ({"min_step": 0.5, "step": 0.1}, "step sizes"),
    ({"data": "mnist:/tmp/\u0000x"}, "NUL"),
    # Well-formed but impossible: refused before they are stored, naming the field.
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"remove": "300k"}, "remove count '300k' (300,000) exceeds the 266,200 prunable weights"),
    ({"calib_samples": 3001}, "calib_samples 3,001 exceeds the 3,000 training samples"),
    ({"eval_samples": 301}, "eval_samples 301 exceeds the 300 evaluation samples"),
    pytest.param({"device": "cuda"}, "device cuda: this server has no GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the server has a GPU")),
])
def test_bad_jobs_get_400_and_queue_nothing(server, data_root, change, message):
    n = len(server.request("GET", "/api/jobs", token=None).json()["jobs"])
    r = server.request("POST", "/api/jobs", json={"command": "prune", **small(data_root), **change})
    assert r.status_code == 400 and message in r.json()["detail"], r.text
    assert len(server.request("GET", "/api/jobs", token=None).json()["jobs"]) == n


@pytest.mark.parametrize("value", [b"Infinity", b"-Infinity", b"NaN", b"1e999"])
def test_non_finite_numbers_get_400_naming_the_field(server, data_root, value):
    """Python's json reads Infinity and NaN (and 1e999 as inf): the settings refuse them by name."""
    n = len(server.request("GET", "/api/jobs", token=None).json()["jobs"])
    body = json.dumps({"command": "prune", **small(data_root)})[:-1].encode() + b', "tolerance": ' + value + b"}"
    r = server.client.post("/api/jobs", content=body, headers={"Authorization": f"Bearer {server.token}",
                                                                "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("job: tolerance must be a finite number"), r.text
    assert len(server.request("GET", "/api/jobs", token=None).json()["jobs"]) == n


def test_escapes_from_the_data_root_are_refused(server, data_root, tmp_path):
    outside = write_idx(tmp_path / "outside")
    (data_root / "link").symlink_to(outside)
    for path in (data_root / "link", f"{data_root}/../{tmp_path.name}/outside", data_root / ".." / "x"):
        r = server.request("POST", "/api/jobs", json={"command": "prune", **small(data_root), "data": f"mnist:{path}"})
        assert r.status_code == 400 and "data root" in r.json()["detail"], (path, r.text)


def test_malformed_and_oversized_bodies(server):
    n = len(server.request("GET", "/api/jobs", token=None).json()["jobs"])
    auth = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    for body in (b"{not json", b"[1, 2]", b'"prune"', b""):
        r = server.client.post("/api/jobs", content=body, headers=auth)
        assert r.status_code == 400, (body, r.text)
    r = server.client.post("/api/jobs", content=b'{"model": "' + b"x" * 100_000 + b'"}', headers=auth)
    assert r.status_code == 413
    # Without a declared length (chunked), the limit still holds.
    r = server.client.post("/api/jobs", content=iter([b'{"model": "', b"x" * 70_000, b'"}']), headers=auth)
    assert r.status_code == 413
    assert len(server.request("GET", "/api/jobs", token=None).json()["jobs"]) == n


def raw_get(url: str, path: str) -> int:
    """Status of a GET sent exactly as written (clients normalise `..` and encoded slashes)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_file_names_never_escape_the_root(server):
    (server.root / "weights").mkdir(exist_ok=True)
    (server.root / "weights" / "token-link.txt").symlink_to(server.root / "token")
    for path in ("/weights/..%2Ftoken", "/weights/%2e%2e%2ftoken", "/weights/../token", "/weights/%2Fetc%2Fpasswd",
                 "/weights//etc/passwd", "/weights/token-link.txt", "/weights/..", "/weights/%2e%2e",
                 "/api/jobs/1/files/..%2F..%2Ftoken", "/api/jobs/1/files/%2e%2e%2f%2e%2e%2fjobs.sqlite",
                 "/api/jobs/1/files/state.safetensors%00", "/api/jobs/1/files/.lock", "/static/..%2F..%2F__init__.py"):
        assert raw_get(server.url, path) in (404, 400), path


@pytest.mark.parametrize("job_id", [2**63, 2**63 - 1, 2**64 + 5, 10**29, 0])
def test_job_ids_sqlite_cannot_hold_are_404(server, job_id):
    for method, path in (("GET", ""), ("GET", "/log"), ("GET", "/events"), ("GET", "/files/mask.safetensors"),
                         ("POST", "/cancel"), ("POST", "/publish")):
        r = server.request(method, f"/api/jobs/{job_id}{path}", json={"name": "a.b"} if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.text)


def test_job_ids_are_integers_only(server):
    for job_id in ("6.0", "1e0", "-1", "+1", "0x1", "1_0", "%201", "\u0661", "1" * 31):
        for method, path in (("GET", ""), ("GET", "/log"), ("GET", "/events"), ("GET", "/files/curve.csv"),
                             ("POST", "/cancel"), ("POST", "/publish")):
            r = server.request(method, f"/api/jobs/{job_id}{path}", json={"name": "a.b"} if method == "POST" else None)
            assert r.status_code in (404, 405), (job_id, method, path, r.status_code)


def test_a_job_serves_only_the_files_its_listing_shows(server, data_root):
    job = server.wait(server.submit(**small(data_root))["id"])
    assert job["state"] == "done", job["error"]
    run = server.root / "runs" / str(job["id"])
    listed = {f["name"] for f in job["files"]}
    assert (run / "state.safetensors").is_file() and (run / "job.json").is_file() and (run / ".lock").exists()
    assert not listed & {"state.safetensors", "job.json", ".lock"}
    for name in listed:
        assert server.request("GET", f"/api/jobs/{job['id']}/files/{name}", token=None).status_code == 200, name
    for name in ("state.safetensors", "job.json", ".lock", "missing.csv", "settings.json"):
        if name not in listed:
            assert server.request("GET", f"/api/jobs/{job['id']}/files/{name}", token=None).status_code == 404, name
    assert json.loads((run / "job.json").read_text()) == {k: v for k, v in job["spec"].items() if k != "nproc_per_node"}


def test_bad_rows_already_stored_never_break_the_listing(tmp_path, data_root):
    """Rows a server of today would refuse (an Infinity, a damaged spec, a NaN point) are shown with
    their error; a queued one fails on its own and the queue goes on."""
    import sqlite3

    server = Server(tmp_path / "serve", "--data-root", str(data_root))
    try:
        good = server.submit(**small(data_root))
        with sqlite3.connect(server.root / "jobs.sqlite") as db:
            def insert(spec, state, **extra):
                names = ", ".join(["command", "spec", "model", "remove", "state", "created", *extra])
                marks = ", ".join("?" * (6 + len(extra)))
                return db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})",
                                  ("prune", spec, "lenet_300_100", "1%", state, time.time(), *extra.values())).lastrowid
            infinite = insert(json.dumps({**small(data_root), "tolerance": float("inf")}), "queued")
            damaged = insert("{not json", "done")
            foreign = insert("[]", "weird", started="yesterday")
            nan = insert(json.dumps(small(data_root)), "done", accept_loss=float("nan"), removed=5)
            db.execute("INSERT INTO points (job, step, point) VALUES (?, 0, ?)",
                       (nan, json.dumps({"step": 0, "removed": 0, "top1": 1.0, "loss": float("nan")})))
        server.wait(good["id"])
        r = server.request("GET", "/api/jobs", token=None)
        assert r.status_code == 200, r.text
        jobs = {j["id"]: j for j in r.json()["jobs"]}  # strict JSON: no NaN nor Infinity in it
        assert {good["id"], infinite, damaged, foreign, nan} <= set(jobs)
        assert "unreadable" in jobs[damaged]["error"] and jobs[damaged]["state"] == "done"
        assert "unreadable" in jobs[foreign]["error"] and jobs[foreign]["state"] == "failed"
        assert jobs[nan]["loss"] is None and jobs[nan]["removed"] == 5
        failed = server.wait(infinite)
        assert failed["state"] == "failed" and "tolerance must be a finite number" in failed["error"]
        assert failed["spec"]["tolerance"] is None
        for job_id in (damaged, foreign, nan):
            assert server.request("GET", f"/api/jobs/{job_id}", token=None).status_code == 200
        assert server.job(nan)["points"][0]["loss"] is None
        assert server.job(good["id"])["state"] == "done"
    finally:
        server.stop()


def test_token_file_is_private_and_never_logged(server):
    assert stat.S_IMODE((server.root / "token").stat().st_mode) == 0o600
    assert server.token not in (server.root / "server.log").read_text()
    assert all(server.token not in p.read_text() for p in (server.root / "logs").glob("*.log"))


def sse_events(server, job_id, last_event_id=None, timeout=120):
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events, event = [], {}
    with server.client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers, timeout=timeout) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if event:
                    events.append(event)
                    if event.get("event") == "end":
                        break
                event = {}
                continue
            key, _, value = line.partition(":")
            event[key] = value.lstrip()
    return events


def test_events_one_per_step_then_end(server, data_root):
    job = server.submit(**small(data_root, remove="3%"))
    events = sse_events(server, job["id"])
    steps = [e for e in events if e["event"] == "step"]
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"])["state"] == "done"
    assert [int(e["id"]) for e in steps] == [json.loads(e["data"])["step"] for e in steps]
    assert [json.loads(e["data"]) for e in steps] == server.job(job["id"])["points"]
    # Reconnecting with Last-Event-ID sends only the later steps.
    middle = int(steps[len(steps) // 2]["id"])
    again = [e for e in sse_events(server, job["id"], middle) if e["event"] == "step"]
    assert [int(e["id"]) for e in again] == [int(e["id"]) for e in steps if int(e["id"]) > middle]


def test_cancel_running_and_queued_jobs(server, data_root):
    long = small(data_root, remove="30%", calib_samples=2000, step=0.002, max_step=0.004)
    running = server.submit(**long)
    queued = server.submit(**long)
    server.wait(running["id"], until=lambda j: j["state"] == "running" and len(j["points"]) >= 1)
    assert server.request("POST", f"/api/jobs/{queued['id']}/cancel").json()["state"] == "cancelled"
    assert server.request("POST", f"/api/jobs/{running['id']}/cancel").json()["state"] == "cancelled"
    job = server.wait(running["id"], until=lambda j: True)
    assert job["state"] == "cancelled"
    time.sleep(2)
    runs = server.root / "runs"
    assert not (runs / str(queued["id"])).exists()  # never started
    assert not (runs / str(running["id"]) / "manifest.json").exists()
    assert server.job(queued["id"])["state"] == "cancelled"
    assert server.request("POST", f"/api/jobs/{running['id']}/cancel").status_code == 409
    assert _processes_of((runs / str(running["id"])).resolve()) == []  # its process group is gone


def test_a_crashing_job_fails_with_its_log_and_the_server_goes_on(server, data_root):
    (data_root / "empty").mkdir()
    job = server.wait(server.submit(**small(data_root, data=f"mnist:{data_root / 'empty'}"))["id"])
    assert job["state"] == "failed" and "has no mnist IDX files" in job["error"]
    log = server.request("GET", f"/api/jobs/{job['id']}/log?lines=500", token=None)
    assert log.headers["content-type"].startswith("text/plain") and f"starting job {job['id']}: " in log.text
    assert log.text.rstrip().endswith(job["error"].splitlines()[-1])
    r = server.request("GET", f"/api/jobs/{job['id']}/log?lines=0", token=None)
    assert r.status_code == 400 and r.json()["detail"].startswith("lines: ")
    assert server.wait(server.submit(**small(data_root))["id"])["state"] == "done"


def test_publish_then_pull_and_torch_hub(server, data_root, tmp_path, monkeypatch):
    done = next(j for j in server.request("GET", "/api/jobs", token=None).json()["jobs"] if j["state"] == "done")
    r = server.request("POST", f"/api/jobs/{done['id']}/publish", json={"name": "lenet_300_100.served_test"})
    assert r.status_code == 201, r.text
    assert server.request("POST", "/api/jobs/999/publish", json={"name": "a.b"}).status_code == 404
    listed = server.request("GET", "/api/weights", token=None).json()["weights"]
    assert [w["name"] for w in listed] == ["lenet_300_100.served_test"]
    registry = f"{server.url}/weights/registry.json"
    r = CliRunner().invoke(main, ["weights", "pull", "lenet_300_100.served_test", "--registry", registry, "--quiet"])
    assert r.exit_code == 0, r.output
    pulled = r.output.strip().splitlines()[-1]
    assert pulled.endswith(".safetensors") and os.path.isfile(pulled)
    state = torch.hub.load_state_dict_from_url(server.url + listed[0]["url"], model_dir=str(tmp_path), check_hash=True)
    served = server.request("GET", f"/api/jobs/{done['id']}/files/model.safetensors", token=None).content
    (tmp_path / "run.safetensors").write_bytes(served)
    from safetensors.torch import load_file
    run_state = load_file(str(tmp_path / "run.safetensors"))
    assert all(torch.equal(state[k], run_state[k]) for k in run_state)


def test_cli_client_submit_follow_jobs_download_cancel(server, data_root, tmp_path):
    args = ["--server", server.url, "--token", server.token]
    spec = small(data_root)
    r = CliRunner().invoke(main, ["submit", *args, "prune", spec["model"], "--remove", "1%", "--data", spec["data"],
                                  "--calib-samples", "500", "--eval-samples", "100", "--batch-size", "250", "--follow"])
    assert r.exit_code == 0, r.output
    job_id = int(r.output.split()[1])
    assert server.job(job_id)["state"] == "done" and server.job(job_id)["spec"]["remove"] == "1%"
    r = CliRunner().invoke(main, ["jobs", "--server", server.url])
    assert r.exit_code == 0 and any(line.split()[:2] == [str(job_id), "done"] for line in r.output.splitlines())
    r = CliRunner().invoke(main, ["download", str(job_id), "--server", server.url, "--out", str(tmp_path / "got")])
    assert r.exit_code == 0, r.output
    assert Mask.load(tmp_path / "got" / "mask.safetensors") == Mask.load(server.root / "runs" / str(job_id) / "mask.safetensors")
    r = CliRunner().invoke(main, ["cancel", str(job_id), *args])
    assert r.exit_code == 2 and "409" in r.output
    r = CliRunner().invoke(main, ["submit", *args, "prune", "lenet_300_100", "--remove", "1%", "--nproc-per-node", "3"])
    assert r.exit_code == 2 and "nproc_per_node must be an integer from 1 to 1" in r.output  # sent, and checked
    r = CliRunner().invoke(main, ["submit", "--server", server.url, "--token", "nope", "prune", "lenet_300_100", "--remove", "1%"])
    assert r.exit_code == 2 and "401" in r.output


def test_kill_9_and_restart_finishes_the_job_identically(tmp_path, data_root):
    """A server killed with -9 mid-run, started again, resumes the job to the uninterrupted run's mask."""
    spec = small(data_root, remove="20%", calib_samples=2000, step=0.005, max_step=0.01)
    server = Server(tmp_path / "serve", "--data-root", str(data_root))
    try:
        queued_spec = small(data_root)
        job = server.submit(**spec)
        queued = server.submit(**queued_spec)
        server.wait(job["id"], until=lambda j: len(j["points"]) >= 3)
        server.kill9()  # its worker lives on, writing the run, until the new server ends it
        server.start()
        assert server.job(queued["id"])["state"] in ("queued", "running", "done")
        final = server.wait(job["id"])
        assert final["state"] == "done", final["error"]
        log = (server.root / "logs" / f"{job['id']}.log").read_text()
        assert log.count(f"starting job {job['id']}") == 2
        assert server.wait(queued["id"])["state"] == "done"
    finally:
        server.stop()
    served = Mask.load(server.root / "runs" / str(job["id"]) / "mask.safetensors")
    assert same_mask(served, cli_run(tmp_path / "cli", data_root, spec))
    steps = [p["step"] for p in final["points"]]
    assert steps == sorted(set(steps))


def test_a_job_with_nproc_per_node_runs_under_torchrun(tmp_path, data_root):
    """nproc_per_node launches the job with torchrun; its ranks end with the single-process mask."""
    spec = small(data_root)
    server = Server(tmp_path / "serve", "--data-root", str(data_root), "--max-nproc", "2")
    try:
        job = server.wait(server.submit(**spec, nproc_per_node=2)["id"])
        assert job["state"] == "done", job["error"]
    finally:
        server.stop()
    log = server.root.joinpath("logs", f"{job['id']}.log").read_text()
    assert "-m torch.distributed.run --standalone --nproc_per_node=2 -m connectome prune" in log
    served = Mask.load(server.root / "runs" / str(job["id"]) / "mask.safetensors")
    assert same_mask(served, cli_run(tmp_path / "cli", data_root, spec))


def test_openapi_page_is_served_without_internet(server):
    html = server.request("GET", "/docs", token=None).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/static/") or a.startswith("data:") for a in assets), assets
    for a in assets:
        if a.startswith("/static/"):
            assert server.request("GET", a, token=None).status_code == 200, a
    paths = server.request("GET", "/openapi.json", token=None).json()["paths"]
    assert {"/api/jobs", "/api/jobs/{job_id}/events", "/api/weights"} <= set(paths)
    body = paths["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["calib_samples"]["minimum"] == 4 and "connectome" in body["properties"]["score"]["enum"]
    assert {"command", "recipe", "nproc_per_node", "model", "remove"} <= set(body["properties"])


def test_follow_ignores_keep_alive_pings(monkeypatch):
    """Pings (SSE comments) reach httpx-sse as empty "message" events: the client must skip them."""
    import contextlib

    from httpx_sse import ServerSentEvent

    import importlib

    cli_serve = importlib.import_module("connectome.cli.serve")  # the package's `serve` is the command

    end = {"state": "done", "target": 10}
    events = [ServerSentEvent(event="step", data=json.dumps({"removed": 5, "top1": 90.0, "loss": 0.3}), id="1"),
              ServerSentEvent(event="message", data="", id="1"),
              ServerSentEvent(event="end", data=json.dumps(end))]

    @contextlib.contextmanager
    def fake_connect(client, method, url, **kw):
        yield type("Source", (), {"iter_sse": lambda self: iter(events)})()

    monkeypatch.setattr("httpx_sse.connect_sse", fake_connect)
    assert cli_serve.follow_job(object(), 1) == end


def test_a_stopped_server_leaves_running_jobs_to_resume(tmp_path, data_root):
    """SIGTERM (Ctrl-C, a service manager) stops the workers but fails no job: the next start resumes it."""
    import sqlite3

    server = Server(tmp_path / "serve", "--data-root", str(data_root))
    try:
        job = server.submit(**small(data_root, remove="20%", calib_samples=2000, step=0.005, max_step=0.01))
        server.wait(job["id"], until=lambda j: len(j["points"]) >= 2)
        server.stop()
        with sqlite3.connect(server.root / "jobs.sqlite") as db:
            assert db.execute("SELECT state FROM jobs WHERE id = ?", (job["id"],)).fetchone() == ("running",)
        assert _processes_of(server.root.resolve() / "runs" / str(job["id"])) == []  # its worker stopped too
        server.start()
        assert server.wait(job["id"])["state"] == "done"
    finally:
        server.stop()
