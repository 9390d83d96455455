"""A real `connectome serve` process on 127.0.0.1 (port 0: the kernel picks one) for the tests."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import write_idx

# A prune of LeNet-300-100 on the data root's tiny MNIST files: a job of seconds on two cores.
SMALL = {"model": "lenet_300_100", "remove": "2%", "calib_samples": 500, "eval_samples": 100, "batch_size": 250}


def small(data_root: Path, **kw) -> dict:
    """A small job's fields (what `connectome prune` takes as options too), `kw` changed."""
    return {**SMALL, "data": f"mnist:{data_root / 'idx'}", **kw}


def small_prune(data_root: Path, **kw) -> dict:
    """A small job as POST /api/jobs takes it, scored by magnitude (the fastest criterion)."""
    return small(data_root, **{"command": "prune", "criterion": "magnitude", **kw})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A --data-root for a module's servers: tiny MNIST files in idx/ (tests may add folders beside)."""
    root = tmp_path_factory.mktemp("data")
    write_idx(root / "idx", n_train=3000, n_test=300)
    return root


def server_fixture(*args: str):
    """A module's `server` fixture: one server on its data root for all its tests, started with `args`."""
    @pytest.fixture(scope="module")
    def server(tmp_path_factory, data_root):
        s = Server(tmp_path_factory.mktemp("serve"), "--data-root", str(data_root), *args)
        yield s
        s.stop()
    return server


class Server:
    def __init__(self, root: Path, *args: str):
        self.root, self.args = Path(root), args
        self.root.mkdir(parents=True, exist_ok=True)
        self.start()

    def start(self) -> None:
        log = self.root / "server.log"
        offset = log.stat().st_size if log.exists() else 0
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one core per job process: 2-core machines
        with open(log, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "connectome", "serve", "--root", str(self.root),
                                          "--port", "0", *self.args], stdout=f, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            text = log.read_text()[offset:]
            m = re.search(r"serving on (http://\S+)", text)
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {text}")
            time.sleep(0.1)
        else:
            raise RuntimeError("the server did not start in 60 s")
        self.token = (self.root / "token").read_text().strip()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def request(self, method: str, path: str, token: str | None = "valid", **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {self.token if token == 'valid' else token}"
        return self.client.request(method, path, headers=headers, **kw)

    def submit(self, **spec) -> dict:
        r = self.request("POST", "/api/jobs", json={"command": "prune", **spec})
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, job_id: int) -> dict:
        r = self.request("GET", f"/api/jobs/{job_id}", token=None)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: int, until=lambda job: job["state"] in ("done", "failed", "cancelled"), timeout=180) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        self.client.close()
        self.proc.kill()
        self.proc.wait()
