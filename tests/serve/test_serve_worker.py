"""The scheduler without a server: GPUs handed out whole, first in first out."""

import json
import os

import pytest

from connectome.serve import worker
from connectome.serve.jobs import JobStore
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


def add(store, nproc=1):
    return store.add("prune", {"model": "lenet_300_100", "remove": "1%", "nproc_per_node": nproc}, ["--remove=1%"],
                     "lenet_300_100", "1%")


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
    assert command[command.index("prune") + 1:][:3] == [f"--out={tmp_path / 'runs' / str(ids[2])}", "--resume", "--quiet"]


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
