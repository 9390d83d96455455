"""The job store: one SQLite file under the server's root.

SQLite is the embedded default (nothing to install) and its transactions are atomic, so a server
killed at any moment finds every job as last committed. Points are the accepted steps of a run, copied
from its run folder as they appear; the run folder stays the source of truth for the result.

The file records its schema version (`PRAGMA user_version`); opening it applies the migrations from
that version to `VERSION`, each in its own transaction, so a server's database follows the code.

A file the store cannot use (damaged, not a database, a folder, another program's tables, held by
another process) is refused with one line before anything is written to it: the migrations run first
on a copy in memory, and the real file is migrated only when that copy ends in the shape of a new
database. Its jobs and runs are the user's to recover, so it is never "repaired" or rewritten.
"""

import json
import sqlite3
import threading
import time
from pathlib import Path

from connectome.errors import ConnectomeError

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")

JOBS = """
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    spec TEXT NOT NULL,           -- the validated settings as JSON, with nproc_per_node (what the worker runs)
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
"""
POINTS = """
CREATE TABLE points (
    job INTEGER NOT NULL REFERENCES jobs(id),
    step INTEGER NOT NULL,
    point TEXT NOT NULL,
    PRIMARY KEY (job, step)
);
"""


def _drop_argv(db: sqlite3.Connection) -> None:
    """2: the `argv` column held "[]" for every job since jobs became settings."""
    if sqlite3.sqlite_version_info >= (3, 35, 0):
        db.execute("ALTER TABLE jobs DROP COLUMN argv")
        return
    # Older SQLite has no DROP COLUMN: copy into a table of the new shape and put it in the old one's
    # place. Ids are kept, and AUTOINCREMENT goes on after the largest (jobs are never deleted).
    db.execute(JOBS.format(name="jobs_v2"))
    columns = ", ".join(r[1] for r in db.execute("PRAGMA table_info(jobs)") if r[1] != "argv")
    db.execute(f"INSERT INTO jobs_v2 ({columns}) SELECT {columns} FROM jobs")
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_v2 RENAME TO jobs")


# MIGRATIONS[i] takes a database of version i + 1 to version i + 2. Version 1 is the schema of the
# servers before versions were recorded (they left user_version at 0).
MIGRATIONS = [_drop_argv]
VERSION = len(MIGRATIONS) + 1


def _version(db: sqlite3.Connection) -> int:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone():
        return 1
    return version


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the database to VERSION, one step per transaction (a server killed between steps
    continues from the last one committed). A database of a later version is left as it is."""
    while True:
        db.execute("BEGIN IMMEDIATE")  # another server opening the same file waits, then sees our version
        try:
            version = _version(db)
            if version > VERSION:
                raise ConnectomeError(f"{path} holds jobs of schema version {version}; this connectome knows up "
                                      f"to {VERSION}: upgrade connectome or choose another --root")
            if version == VERSION:
                db.execute("COMMIT")
                return
            if version == 0:  # a new file
                db.execute(JOBS.format(name="jobs"))
                db.execute(POINTS)
            else:
                MIGRATIONS[version - 1](db)
            db.execute(f"PRAGMA user_version = {VERSION if version == 0 else version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _shape(db: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
    """Every table's columns, (name, type): what the store's queries rely on."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: db.execute("SELECT name, type FROM pragma_table_info(?)", (t,)).fetchall() for t in tables}


def _difference(have: dict, want: dict) -> str | None:
    """The first way the shape `have` differs from `want`, in words; None when they are the same. A
    foreign file's names are shown quoted and cut short: the message stays one line."""
    def q(name: str) -> str:
        return repr(name[:40])

    for table in sorted(want.keys() | have.keys()):
        if table not in have:
            return f"it has no table {q(table)}"
        if table not in want:
            return f"it has a table {q(table)} that the jobs database does not"
        names, wanted = dict(have[table]), dict(want[table])
        for name, kind in want[table]:
            if name not in names:
                return f"table {q(table)} has no column {q(name)}"
            if names[name] != kind:
                return f"column {table}.{name} is {q(names[name])}, not {kind}"
        extra = [name for name, _ in have[table] if name not in wanted]
        if extra:
            return f"table {q(table)} has a column {q(extra[0])} that the jobs database does not"
    return None


def _check(db: sqlite3.Connection, path: Path) -> None:
    """Refuse, without writing to it, a file that is damaged or that the migrations would not bring
    to the shape of a new database (another program's tables, columns a foreign writer changed)."""
    problems = [r[0] for r in db.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise ConnectomeError(f"{path} is damaged ({_one_line(problems[0])}): {_WHAT_TO_DO}")
    copy, new = sqlite3.connect(":memory:", isolation_level=None), sqlite3.connect(":memory:", isolation_level=None)
    try:
        db.backup(copy)
        _migrate(copy, path)
        _migrate(new, path)
        wrong = _difference(_shape(copy), _shape(new))
    finally:
        copy.close()
        new.close()
    if wrong:
        raise ConnectomeError(f"{path} is not a jobs database of schema version {VERSION} ({wrong}): {_WHAT_TO_DO}")


_WHAT_TO_DO = "move it out of the root (the server starts a new one) or choose another --root"
LOCK_WAIT = 5.0  # seconds to wait for another process's transaction before refusing the file


def _refusal(path: Path, e: sqlite3.Error | UnicodeDecodeError) -> ConnectomeError:
    """One line for an error SQLite raised while the file was opened and checked (a damaged schema
    can hold names that are not UTF-8: Python then fails to decode what SQLite reports)."""
    why = "it holds text that is not UTF-8" if isinstance(e, UnicodeDecodeError) else _one_line(str(e))
    if getattr(e, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return ConnectomeError(f"{path} is locked by another process ({why}): stop it, or choose another --root")
    if path.is_dir():
        return ConnectomeError(f"{path} is a folder, not the jobs database: {_WHAT_TO_DO}")
    return ConnectomeError(f"{path} cannot be used as the jobs database ({why}): {_WHAT_TO_DO}")


def _one_line(text: str) -> str:
    """SQLite's reports can span lines and quote a damaged schema at length."""
    return " ".join(text.split())[:200]


class JobStore:
    """Thread-safe access to the jobs database (one connection, serialised by a lock)."""

    def __init__(self, path: Path):
        self.lock = threading.Lock()
        try:
            self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=LOCK_WAIT)
        except sqlite3.Error as e:  # a folder, a path SQLite cannot open
            raise _refusal(path, e) from None
        self.db.row_factory = sqlite3.Row
        # A damaged row's text may not be UTF-8: read it as far as it is, so that it is listed with the
        # others (the API shows what it cannot use as an error of that row), not a failed listing.
        self.db.text_factory = lambda b: b.decode(errors="replace")
        try:
            _check(self.db, path)
            _migrate(self.db, path)
            self.db.execute("PRAGMA journal_mode=WAL")  # after the checks: a refused file is left unchanged
        except (sqlite3.Error, UnicodeDecodeError) as e:
            self.db.close()
            raise _refusal(path, e) from None
        except BaseException:
            self.db.close()
            raise

    def _exec(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def add(self, command: str, spec: dict, model: str, remove: str) -> int:
        with self.lock:
            cur = self.db.execute("INSERT INTO jobs (command, spec, model, remove, state, created) "
                                  "VALUES (?, ?, ?, ?, 'queued', ?)",
                                  (command, json.dumps(spec, allow_nan=False), model, remove, time.time()))
            return cur.lastrowid

    def get(self, job_id: int) -> dict | None:
        if not -2**63 <= job_id < 2**63:  # outside SQLite's integers: no such row
            return None
        rows = self._exec("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return dict(rows[0]) if rows else None

    def all(self) -> list[dict]:
        return [dict(r) for r in self._exec("SELECT * FROM jobs ORDER BY id DESC")]

    def in_state(self, state: str) -> list[dict]:
        return [dict(r) for r in self._exec("SELECT * FROM jobs WHERE state = ? ORDER BY id", (state,))]

    def update(self, job_id: int, **fields) -> None:
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"unknown state {fields['state']!r}")
        names = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE jobs SET {names} WHERE id = ?", (*fields.values(), job_id))

    def transition(self, job_id: int, from_states: tuple[str, ...], **fields) -> bool:
        """Update only if the job is in one of `from_states` (so cancel and finish cannot race)."""
        names = ", ".join(f"{k} = ?" for k in fields)
        marks = ", ".join("?" for _ in from_states)
        with self.lock:
            cur = self.db.execute(f"UPDATE jobs SET {names} WHERE id = ? AND state IN ({marks})",
                                  (*fields.values(), job_id, *from_states))
            return cur.rowcount == 1

    def add_points(self, job_id: int, points: list[dict]) -> None:
        """Store new points (in step order) and the job's summary of them, in one transaction."""
        last = points[-1]
        evaluated = [p for p in points if p.get("eval_top1") is not None]
        with self.lock, self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO points (job, step, point) VALUES (?, ?, ?)",
                                [(job_id, p["step"], json.dumps(p)) for p in points])
            self.db.execute("UPDATE jobs SET steps = (SELECT COUNT(*) - 1 FROM points WHERE job = ?), removed = ?, "
                            "accept_top1 = ?, accept_loss = ? WHERE id = ?",
                            (job_id, last["removed"], last["top1"], last["loss"], job_id))
            if evaluated:
                self.db.execute("UPDATE jobs SET eval_top1 = ?, eval_loss = ? WHERE id = ?",
                                (evaluated[-1]["eval_top1"], evaluated[-1]["eval_loss"], job_id))

    def points(self, job_id: int, after_step: int = -1) -> list[dict]:
        rows = self._exec("SELECT point FROM points WHERE job = ? AND step > ? ORDER BY step", (job_id, after_step))
        return [json.loads(r["point"]) for r in rows]

    def last_point(self, job_id: int) -> dict | None:
        rows = self._exec("SELECT point FROM points WHERE job = ? ORDER BY step DESC LIMIT 1", (job_id,))
        return json.loads(rows[0]["point"]) if rows else None
