"""The scheduler without a server: GPUs handed out whole, first in first out."""

import json
import os

import pytest

from connectome.pruning.settings import PruneSettings
from connectome.serve import worker
from connectome.serve.jobs import JobStore
from connectome.serve.spec import Job
from connectome.serve.worker import Scheduler


class FakeProcess:
    launched = []

    def __init__(self, command, env, **kw):
        self.command, self.env, self.rc, self.pid = command, env, None, 10**7 + len(FakeProcess.launched)
        FakeProcess.launched.append(self)

    def poll(self):
        return self.rc


@pytest.fixture
def fake_popen(monkeypatch):
    FakeProcess.launched = []
    monkeypatch.setattr(worker.subprocess, "Popen", FakeProcess)
    return FakeProcess.launched


def add(store, nproc=1, **settings):
    s = PruneSettings.from_mapping({"model": "lenet_300_100", "remove": "1%", **settings})
    return store.add("prune", Job(s, nproc).spec, s.model, s.remove)


def test_gpus_are_handed_out_whole_and_in_order(tmp_path, fake_popen, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # the server's own GPUs, by their names
    store = JobStore(tmp_path / "jobs.sqlite")
    s = Scheduler(store, tmp_path, workers=3, gpus=2)
    a, b, c = add(store), add(store, nproc=2), add(store)
    s.tick()
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in fake_popen] == ["5"]  # b waits for two; c may not overtake it
    assert [store.get(j)["state"] for j in (a, b, c)] == ["running", "queued", "queued"]
    fake_popen[0].rc = 1  # a ends
    s.tick()
    assert fake_popen[1].env["CUDA_VISIBLE_DEVICES"] == "5,7" and "--nproc_per_node=2" in fake_popen[1].command
    assert store.get(a)["state"] == "failed" and store.get(c)["state"] == "queued"


def test_without_gpus_workers_bound_the_jobs_and_cancel_wins(tmp_path, fake_popen, monkeypatch):
    monkeypatch.setattr(worker, "_signal_group", lambda pid, sig: None)
    store = JobStore(tmp_path / "jobs.sqlite")
    s = Scheduler(store, tmp_path, workers=2)
    ids = [add(store) for _ in range(3)]
    s.tick()
    assert len(fake_popen) == 2  # the third waits for a worker
    assert fake_popen[0].env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # untouched
    assert s.cancel(ids[0]) and not s.cancel(ids[0])
    fake_popen[0].rc = -15  # killed by the cancel: it stays cancelled, not failed
    s.tick()
    assert store.get(ids[0])["state"] == "cancelled" and store.get(ids[2])["state"] == "running"
    command = fake_popen[2].command
    run = tmp_path / "runs" / str(ids[2])
    assert command[command.index("prune") + 1:] == [f"--out={run}", "--quiet", f"--job={run / 'job.json'}"]


def test_recover_requeues_running_jobs_first(tmp_path, fake_popen):
    store = JobStore(tmp_path / "jobs.sqlite")
    first, second = add(store), add(store)
    store.update(second, state="running", started=1.0, pid=12345678)
    s = Scheduler(store, tmp_path, workers=1)
    s.recover()
    assert store.get(second)["state"] == "queued"
    s.tick()
    assert fake_popen[0].command[fake_popen[0].command.index("prune") + 1] == f"--out={tmp_path / 'runs' / str(second)}"
    assert json.loads(store.get(first)["spec"])["remove"] == "1%" and store.get(first)["state"] == "queued"


def test_jobs_side_by_side_share_the_cores(tmp_path, fake_popen, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(worker.os, "cpu_count", lambda: 8)
    store = JobStore(tmp_path / "jobs.sqlite")
    add(store), add(store, nproc=2)
    Scheduler(store, tmp_path, workers=2).tick()
    assert [p.env["OMP_NUM_THREADS"] for p in fake_popen] == ["4", "2"]  # 8 cores / (2 workers x ranks)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the operator's choice wins
    add(store)
    Scheduler(store, tmp_path, workers=3).tick()
    assert fake_popen[-1].env["OMP_NUM_THREADS"] == "3"


def test_a_job_that_cannot_start_fails_and_the_queue_goes_on(tmp_path, fake_popen, monkeypatch):
    def popen(command, env, **kw):
        if len(fake_popen) == 0 and not getattr(popen, "failed", False):
            popen.failed = True
            raise OSError("no such interpreter")
        return FakeProcess(command, env)

    monkeypatch.setattr(worker.subprocess, "Popen", popen)
    store = JobStore(tmp_path / "jobs.sqlite")
    first, second = add(store), add(store)
    Scheduler(store, tmp_path, workers=1).tick()
    assert store.get(first)["state"] == "failed" and "no such interpreter" in store.get(first)["error"]
    assert store.get(second)["state"] == "running"


def test_the_worker_runs_the_stored_settings_from_job_json(tmp_path, fake_popen):
    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = add(store, seed=7, include=["2.*"], tolerance=2.5)
    Scheduler(store, tmp_path, workers=1).tick()
    run = tmp_path / "runs" / str(job_id)
    written = json.loads((run / "job.json").read_text())
    assert PruneSettings.from_mapping(written) == PruneSettings.from_mapping(
        {"model": "lenet_300_100", "remove": "1%", "seed": 7, "include": ["2.*"], "tolerance": 2.5})
    assert f"--job={run / 'job.json'}" in fake_popen[0].command


def test_a_restarted_job_resumes_its_state(tmp_path, fake_popen):
    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = add(store)
    run = tmp_path / "runs" / str(job_id)
    run.mkdir(parents=True)
    (run / "state.safetensors").write_bytes(b"")  # a run that saved a step before its server died
    Scheduler(store, tmp_path, workers=1).tick()
    command = fake_popen[0].command
    assert command[command.index("prune") + 1:][:3] == [f"--out={run}", "--resume", "--quiet"]


def test_a_damaged_row_fails_alone_and_the_queue_goes_on(tmp_path, fake_popen):
    store = JobStore(tmp_path / "jobs.sqlite")
    bad = [add(store) for _ in range(3)]
    store.update(bad[0], spec="{not json")
    store.update(bad[1], spec=json.dumps({"model": "lenet_300_100", "remove": "1%", "tolerance": float("inf")}))
    store.update(bad[2], spec=json.dumps({"model": "lenet_300_100", "remove": "1%", "nproc_per_node": "two"}))
    good = add(store)
    Scheduler(store, tmp_path, workers=1).tick()
    assert [store.get(j)["state"] for j in bad] == ["failed"] * 3
    assert "not JSON" in store.get(bad[0])["error"] and "tolerance" in store.get(bad[1])["error"]
    assert "nproc_per_node" in store.get(bad[2])["error"]
    assert store.get(good)["state"] == "running" and len(fake_popen) == 1


def test_a_row_of_an_earlier_server_still_runs(tmp_path, fake_popen):
    """Earlier servers stored the submitted body: a recipe's name and the fields given."""
    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = add(store)
    store.update(job_id, spec=json.dumps({"recipe": "prune-lenet_300_100", "seed": 3}))
    Scheduler(store, tmp_path, workers=1).tick()
    written = json.loads((tmp_path / "runs" / str(job_id) / "job.json").read_text())
    assert written["model"] == "lenet_300_100" and written["seed"] == 3 and store.get(job_id)["state"] == "running"
