"""The job store's schema versions: a database written before versions were recorded (version 1) opens
with today's store, keeps its jobs and runs them; a later version is refused and left untouched."""

import json
import sqlite3
import time

import pytest

from connectome.errors import ConnectomeError
from connectome.pruning.settings import PruneSettings
from connectome.serve import jobs, worker
from connectome.serve.jobs import JobStore

# Version 1 of the schema, frozen: the store's DDL as servers ran it before they recorded a version
# (connectome/serve/jobs.py at 55aa3de), copied verbatim. Never edit it: existing databases hold it.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    spec TEXT NOT NULL,           -- the validated settings as JSON, with nproc_per_node (what the worker runs)
    argv TEXT NOT NULL,           -- unused ("[]"): jobs of earlier servers kept `prune` arguments here
    model TEXT NOT NULL,          -- as resolved (the body may have named only a recipe)
    remove TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    pid INTEGER,
    target INTEGER,
    prunable INTEGER,
    error TEXT,
    -- the latest point, kept here so that listing jobs reads one row per job
    steps INTEGER DEFAULT 0,
    removed INTEGER,
    accept_top1 REAL,
    accept_loss REAL,
    eval_top1 REAL,
    eval_loss REAL
);
CREATE TABLE IF NOT EXISTS points (
    job INTEGER NOT NULL REFERENCES jobs(id),
    step INTEGER NOT NULL,
    point TEXT NOT NULL,
    PRIMARY KEY (job, step)
);
"""


def spec(**values) -> str:
    """A job's spec as the version-1 server stored it: the validated settings and nproc_per_node."""
    s = PruneSettings.from_mapping({"model": "lenet_300_100", "remove": "1%", **values})
    return json.dumps({**s.to_dict(), "nproc_per_node": 1})


def write_v1(path, specs=None) -> dict[str, int]:
    """A version-1 database as its server left it: a finished job with its points, a failed one, a
    queued one (statements as the version-1 store ran them)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA_V1)
    ids = {}
    for name in ("done", "failed", "queued"):
        ids[name] = db.execute("INSERT INTO jobs (command, spec, argv, model, remove, state, created) "
                               "VALUES (?, ?, '[]', ?, ?, 'queued', ?)",
                               ("prune", (specs or {}).get(name, spec()), "lenet_300_100", "1%",
                                time.time())).lastrowid
    points = [{"step": 0, "removed": 0, "top1": 0.9, "loss": 0.3}, {"step": 1, "removed": 2, "top1": 0.89, "loss": 0.31}]
    db.executemany("INSERT OR REPLACE INTO points (job, step, point) VALUES (?, ?, ?)",
                   [(ids["done"], p["step"], json.dumps(p)) for p in points])
    db.execute("UPDATE jobs SET state = 'done', started = 1.0, finished = 2.0, target = 2, prunable = 266200, "
               "steps = 1, removed = 2, accept_top1 = 0.89, accept_loss = 0.31 WHERE id = ?", (ids["done"],))
    db.execute("UPDATE jobs SET state = 'failed', finished = 3.0, error = 'exit code 1' WHERE id = ?", (ids["failed"],))
    db.close()
    return ids


def rows(path) -> list[dict]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY id DESC")]
    finally:
        db.close()


def schema(path) -> tuple:
    """What defines the database's shape: its version and every table's columns."""
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return (db.execute("PRAGMA user_version").fetchone()[0],
                {t: db.execute(f"PRAGMA table_info({t})").fetchall() for t in tables})
    finally:
        db.close()


class FakeProcess:
    def __init__(self, command, **kw):
        self.command, self.pid = command, 10**7

    def poll(self):
        return None


def test_a_version_1_database_migrates_lists_and_runs_its_jobs(tmp_path, monkeypatch):
    path = tmp_path / "jobs.sqlite"
    ids = write_v1(path)
    before = rows(path)
    assert {r["argv"] for r in before} == {"[]"}

    store = JobStore(path)
    assert schema(path)[0] == jobs.VERSION == 2
    assert store.all() == [{k: v for k, v in r.items() if k != "argv"} for r in before]
    assert [p["step"] for p in store.points(ids["done"])] == [0, 1] and store.last_point(ids["done"])["removed"] == 2

    monkeypatch.setattr(worker.subprocess, "Popen", FakeProcess)
    scheduler = worker.Scheduler(store, tmp_path)
    scheduler.tick()  # the queued job is claimed and started
    job = store.get(ids["queued"])
    assert job["state"] == "running" and job["pid"] == 10**7
    assert f"--out={tmp_path / 'runs' / str(ids['queued'])}" in scheduler.procs[ids["queued"]].command
    assert store.add("prune", json.loads(spec()), "lenet_300_100", "1%") == ids["queued"] + 1
    store.db.close()


def test_a_migrated_database_has_the_shape_of_a_new_one(tmp_path):
    write_v1(tmp_path / "old.sqlite")
    JobStore(tmp_path / "old.sqlite").db.close()
    JobStore(tmp_path / "new.sqlite").db.close()
    assert schema(tmp_path / "old.sqlite") == schema(tmp_path / "new.sqlite")
    assert "argv" not in rows(tmp_path / "old.sqlite")[0]


def test_sqlite_without_drop_column_rebuilds_the_table(tmp_path, monkeypatch):
    write_v1(tmp_path / "old.sqlite")
    before = rows(tmp_path / "old.sqlite")
    monkeypatch.setattr(jobs.sqlite3, "sqlite_version_info", (3, 34, 1))
    store = JobStore(tmp_path / "old.sqlite")
    JobStore(tmp_path / "new.sqlite").db.close()
    assert schema(tmp_path / "old.sqlite") == schema(tmp_path / "new.sqlite")
    assert store.all() == [{k: v for k, v in r.items() if k != "argv"} for r in before]
    assert store.add("prune", json.loads(spec()), "lenet_300_100", "1%") == before[0]["id"] + 1  # ids go on
    store.db.close()


def test_a_failed_step_leaves_the_database_at_its_version(tmp_path, monkeypatch):
    write_v1(tmp_path / "jobs.sqlite")
    before = schema(tmp_path / "jobs.sqlite")

    def broken(db):
        db.execute("ALTER TABLE jobs DROP COLUMN argv")
        raise OSError("killed mid-step")

    monkeypatch.setattr(jobs, "MIGRATIONS", [broken])
    with pytest.raises(OSError):
        JobStore(tmp_path / "jobs.sqlite")
    assert schema(tmp_path / "jobs.sqlite") == before  # argv is still there, the version still 1 (0 on file)


def test_opening_twice_changes_nothing(tmp_path):
    for name in ("old.sqlite", "new.sqlite"):
        path = tmp_path / name
        if name == "old.sqlite":
            write_v1(path)
        JobStore(path).db.close()
        first, listed = schema(path), rows(path)
        store = JobStore(path)
        assert schema(path) == first and store.all() == listed
        store.db.close()


def test_a_later_version_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    store.add("prune", json.loads(spec()), "lenet_300_100", "1%")
    store.db.execute(f"PRAGMA user_version = {jobs.VERSION + 1}")
    store.db.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER")  # what that later version added
    store.db.close()  # the last connection: SQLite checkpoints the WAL into the file
    content = path.read_bytes()
    with pytest.raises(ConnectomeError) as e:
        JobStore(path)
    assert f"schema version {jobs.VERSION + 1}" in str(e.value) and "\n" not in str(e.value)
    assert path.read_bytes() == content


def test_a_server_runs_the_jobs_of_a_version_1_database(tmp_path):
    """The whole service on a database its version-1 server left: listed, and the queued job runs."""
    pytest.importorskip("uvicorn")
    from conftest import write_idx
    from serve_helpers import Server

    data = write_idx(tmp_path / "data" / "idx", n_train=3000, n_test=300)
    small = spec(remove="2%", data=f"mnist:{data}", calib_samples=500, eval_samples=100, batch_size=250)
    root = tmp_path / "serve"
    root.mkdir()
    ids = write_v1(root / "jobs.sqlite", {"queued": small, "failed": small})
    server = Server(root, "--data-root", str(data.parent))
    try:
        listed = {j["id"]: j for j in server.request("GET", "/api/jobs", token=None).json()["jobs"]}
        assert set(listed) == set(ids.values()) and not any("unreadable" in (j["error"] or "") for j in listed.values())
        assert listed[ids["done"]]["state"] == "done" and listed[ids["failed"]]["state"] == "failed"
        job = server.wait(ids["queued"])
        assert job["state"] == "done", job["error"]
        assert job["points"] and (root / "runs" / str(ids["queued"]) / "manifest.json").is_file()
    finally:
        server.stop()
