"""Issue 32 on `connectome serve`: the server's policy checked again when a job runs (row 3), every
image through the model counted against --max-work (row 12), --max-work itself bounded (row 13), a
publish name too long for a file (row 15), a jobs database the server cannot use (row 16). Each test
names the row of the issue it covers."""

import functools
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import uvicorn  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from serve_helpers import Server, data_root, server_fixture, small_prune  # noqa: E402, F401 (data_root: a fixture)

from connectome.cli import main  # noqa: E402
from connectome.errors import ConnectomeError  # noqa: E402
from connectome.serve import jobs  # noqa: E402
from connectome.serve.jobs import JobStore  # noqa: E402

server = server_fixture("--max-work", "1e5")


def one_line_refusal(r) -> str:
    detail = r.json()["detail"]
    assert r.status_code == 400 and "\n" not in detail, r.text
    return detail


# --- row 12: acceptance checks are work too ------------------------------------------------------------

def test_row12_acceptance_checks_count_against_max_work(server, data_root):
    # 40 epochs of 400 images at batch 1 with a check every batch: each of the 10 counts is checked
    # 1,001 times at least (patience 1000) on 100 images, 1.0e6 in all, over this server's 1e5
    before = server.request("GET", "/api/jobs", token=None).json()["jobs"]
    r = server.request("POST", "/api/jobs", json=small_prune(data_root, criterion="learned", learn_check=1e-9,
                                                       learn_patience=1000, batch_size=1))
    detail = one_line_refusal(r)
    assert "10,010 acceptance checks of 100" in detail and "over this server's limit of 1e+05" in detail, detail
    assert server.request("GET", "/api/jobs", token=None).json()["jobs"] == before


def test_row12_the_default_checks_are_counted_and_fit():
    from connectome.pruning.settings import PruneSettings
    from connectome.serve import work

    s = PruneSettings.from_mapping({"model": "lenet_300_100", "remove": "2%", "criterion": "learned",
                                    "calib_samples": 500, "batch_size": 250})
    total, how = work.passes(s, target=5324, prunable=266200, evaluated=100)
    # two batches an epoch, 8 per count, a check every batch: patience 2 stops a count after 3 checks
    assert "30 acceptance checks of 100" in how and total == 40 * 400 + 11 * 200 + 30 * 100


# --- row 15: a publish name too long for a file name ---------------------------------------------------

def test_row15_a_publish_name_too_long_for_a_file_is_a_400(server, data_root):
    job = server.wait(server.submit(**small_prune(data_root))["id"])
    assert job["state"] == "done", job["error"]
    name = "lenet_300_100." + "a" * 286
    r = server.request("POST", f"/api/jobs/{job['id']}/publish", json={"name": name})
    detail = one_line_refusal(r)
    assert "(300 characters)" in detail and "at most 150 characters" in detail and len(detail) < 300, detail
    assert server.request("GET", "/api/weights", token=None).json()["weights"] == []
    weights = server.root / "weights"
    assert not weights.exists() or not any(weights.iterdir())  # no file left behind


# --- row 13: --max-work is a number of images ----------------------------------------------------------

@pytest.fixture
def never_serve(monkeypatch):
    """A server that got past its checks would serve: say so instead of serving forever."""
    def started(self, *a, **kw):
        raise AssertionError("the server started")
    monkeypatch.setattr(uvicorn.Server, "run", started)


def serve(root, *args):
    return CliRunner().invoke(main, ["serve", "--root", str(root), "--port", "0", *args])


def one_line(r) -> bool:
    lines = r.output.strip().splitlines()
    return (r.exit_code == 2 and isinstance(r.exception, SystemExit) and len(lines) == 1
            and lines[0].startswith("error: "))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5", "0", "0.5", "1e19"])
def test_row13_max_work_outside_1_to_1e18_is_refused_at_start(tmp_path, never_serve, value):
    r = serve(tmp_path / "srv", "--max-work", value)
    assert one_line(r) and f"--max-work {float(value):g}: give the most images" in r.output, r.output
    assert not (tmp_path / "srv").exists()  # refused before anything was made


# --- row 16: a jobs database the server cannot use -----------------------------------------------------

def valid_store(path: Path, jobs_count: int = 200) -> None:
    store = JobStore(path)
    for _ in range(jobs_count):
        store.add("prune", {"pad": "x" * 400}, "lenet_300_100", "1%")
    store.db.close()  # the last connection: the WAL is checkpointed into the file


def wrong_columns(path: Path) -> None:
    """The current version's number, but a jobs table another writer made (no `state`)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, spec TEXT)")
    db.execute("CREATE TABLE points (job INTEGER, step INTEGER, point TEXT)")
    db.execute(f"PRAGMA user_version = {jobs.VERSION}")
    db.close()


def truncated(path: Path) -> None:
    valid_store(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("make, message", [
    (truncated, "cannot be used as the jobs database (database disk image is malformed)"),
    (lambda p: p.write_bytes(bytes(range(256)) * 20), "cannot be used as the jobs database (file is not a database)"),
    (lambda p: p.mkdir(), "is a folder, not the jobs database"),
    (wrong_columns, f"is not a jobs database of schema version {jobs.VERSION} (table 'jobs' has no column 'command')"),
])
def test_row16_an_unusable_jobs_database_is_refused_in_one_line_and_left_as_it_was(tmp_path, never_serve, make,
                                                                                   message):
    root = tmp_path / "srv"
    root.mkdir()
    path = root / "jobs.sqlite"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    r = serve(root)
    assert one_line(r) and f"{path.resolve()} {message}" in r.output, r.output
    assert "move it out of the root" in r.output
    if before is not None:
        assert path.read_bytes() == before  # the header too: not switched to WAL
        assert sorted(p.name for p in root.glob("jobs.sqlite*")) == ["jobs.sqlite"]


def test_row16_a_jobs_database_another_process_holds_is_refused(tmp_path, never_serve, monkeypatch):
    monkeypatch.setattr(jobs, "LOCK_WAIT", 0.2)
    root = tmp_path / "srv"
    root.mkdir()
    valid_store(root / "jobs.sqlite", jobs_count=1)
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                               "db.execute('BEGIN EXCLUSIVE')\nprint('held', flush=True)\ntime.sleep(60)",
                               str(root / "jobs.sqlite")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = serve(root)
    finally:
        holder.kill()
        holder.wait()
    assert one_line(r) and "jobs.sqlite is locked by another process (database is locked)" in r.output, r.output
    store = JobStore(root / "jobs.sqlite")  # once free, it opens with its job
    assert len(store.all()) == 1
    store.db.close()


@functools.cache
def valid_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        valid_store(Path(folder) / "jobs.sqlite", jobs_count=20)
        return (Path(folder) / "jobs.sqlite").read_bytes()


def mutated(data) -> bytes:
    """A valid database cut short, or with a few of its bytes overwritten."""
    valid = valid_bytes()
    if data.draw(st.booleans()):
        return valid[:data.draw(st.integers(0, len(valid) - 1))]
    at = data.draw(st.integers(0, len(valid) - 1))
    patch = data.draw(st.binary(min_size=1, max_size=16))
    return (valid[:at] + patch + valid[at + len(patch):])[:len(valid)]


@given(st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_row16_any_bytes_open_or_are_refused_in_one_line_unchanged(data):
    content = data.draw(st.binary(max_size=2048)) if data.draw(st.booleans()) else mutated(data)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "jobs.sqlite"
        path.write_bytes(content)
        try:
            store = JobStore(path)
        except ConnectomeError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            assert path.read_bytes() == content
            return
        store.all()  # what opens can be listed
        store.db.close()


# --- row 3: the policy of the server that runs the job -------------------------------------------------

def test_row3_user_code_queued_under_allow_user_code_does_not_run_after_a_restart_without_it(tmp_path, data_root,
                                                                                              monkeypatch):
    mark = tmp_path / "built"
    code = tmp_path / "code"
    code.mkdir()
    (code / "h3_builder.py").write_text(  # a user's builder that says it ran, then holds the worker
        f"import time\n\ndef build():\n    with open({str(mark)!r}, 'a') as f:\n        f.write('built\\n')\n"
        f"    time.sleep(600)\n")
    monkeypatch.setenv("PYTHONPATH", f"{code}:{os.environ.get('PYTHONPATH', '')}")
    root = tmp_path / "srv"
    user = small_prune(data_root, model="h3_builder:build")
    first = Server(root, "--data-root", str(data_root), "--allow-user-code")
    try:
        running = first.submit(**user)["id"]
        first.wait(running, until=lambda job: mark.is_file(), timeout=120)
        queued = first.submit(**user)["id"]
        assert first.job(queued)["state"] == "queued"
    finally:
        first.stop()  # the running job stays `running`, to resume at the next start
    second = Server(root, "--data-root", str(data_root))
    try:
        for job_id in (running, queued):
            job = second.wait(job_id)
            assert job["state"] == "failed" and "\n" not in job["error"], job
            assert "model 'h3_builder:build' imports code, which this server refuses" in job["error"], job
            assert "--allow-user-code" in job["error"]
    finally:
        second.stop()
    assert mark.read_text() == "built\n"  # the builder ran once, under the server that allowed it


def test_row2_a_job_log_that_is_a_link_fails_the_job_and_leaves_its_target(tmp_path, data_root):
    """The worker appends a job's output to ROOT/logs/ID.log: never through a link planted there."""
    root = tmp_path / "srv"
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    server = Server(root, "--data-root", str(data_root))
    try:
        (root / "logs").mkdir(parents=True, exist_ok=True)
        (root / "logs" / "1.log").symlink_to(target)
        job_id = server.submit(**small_prune(data_root))["id"]
        assert job_id == 1
        job = server.wait(job_id)
        assert job["state"] == "failed" and "\n" not in job["error"] and "symbolic link" in job["error"], job
    finally:
        server.stop()
    assert target.read_text() == "keep"
