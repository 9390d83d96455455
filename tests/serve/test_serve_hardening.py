"""Issue 25 on a real server (127.0.0.1): bounded work per job, publish names matched whole, published
metrics measured, one server per root. Each test names the row of the issue it covers."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from click.testing import CliRunner  # noqa: E402
from serve_helpers import Server, data_root, server_fixture, small_prune  # noqa: E402, F401 (data_root: a fixture)

from connectome.cli import main  # noqa: E402

server = server_fixture("--max-work", "1e6")


@pytest.mark.parametrize("change, message", [
    ({"learn_lr": 1e300, "criterion": "learned"}, "learn_lr must be at most"),  # row 1, on the service
    ({"learn_epochs": 1e300, "criterion": "learned"}, "learn_epochs must be at most"),
    ({"restore_cycles": 10**18}, "restore_cycles 1,000,000,000,000,000,000 steps"),
    ({"calib_samples": 10**400}, "calib_samples must be an integer of 64 bits"),
    ({"learn_points": 10**9, "criterion": "learned"}, "learn_points 1,000,000,000 exceeds the 5,324 weights"),
    ({"batch_size": 10**18}, "batch_size 1,000,000,000,000,000,000 exceeds the 500 samples of the job's largest pass"),
    ({"batch_size": 1e18}, "batch_size must be an integer"),
    ({"workers": 100000}, "workers must be at most"),
    # within every setting's bounds, but 1,000 epochs of 2,400 images is over this server's 1e6
    ({"learn_epochs": 1000, "criterion": "learned", "calib_samples": 3000},
     "job: asks for at least 2.43e+06 images through the model (learn_epochs 1000 x 2,400 decision samples"),
])
def test_row2_work_a_job_asks_for_is_bounded(server, data_root, change, message):
    before = server.request("GET", "/api/jobs", token=None).json()["jobs"]
    r = server.request("POST", "/api/jobs", json=small_prune(data_root, **change))
    assert r.status_code == 400 and message in r.json()["detail"], r.text
    assert "\n" not in r.json()["detail"]
    if "images through the model" in message:
        assert "over this server's limit of 1e+06 (connectome serve --max-work)" in r.json()["detail"]
    assert server.request("GET", "/api/jobs", token=None).json()["jobs"] == before


def test_row2_and_row9_a_job_within_the_limit_runs_and_publishes_measured_metrics(server, data_root):
    job = server.wait(server.submit(**small_prune(data_root))["id"])
    assert job["state"] == "done", job["error"]
    # row 6: a name that ends in a newline names no file anybody can pull
    for name in ("lenet_300_100.x\n", "lenet_300_100.x\n\n"):
        r = server.request("POST", f"/api/jobs/{job['id']}/publish", json={"name": name})
        assert r.status_code == 400 and "use arch.tag" in r.json()["detail"], r.text
    assert server.request("GET", "/api/weights", token=None).json()["weights"] == []
    r = server.request("POST", f"/api/jobs/{job['id']}/publish", json={"name": "lenet_300_100.hardened"})
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["meta"]["_metrics_source"] == f"measured again on mnist:{data_root / 'idx'} (100 images)"
    assert entry["meta"]["_metrics"]["mnist"]["acc@1"] == pytest.approx(job["top1"])
    # row 4: `download --out` on a folder of someone else's files leaves them as they are
    mine = server.root.parent / "mine"
    mine.mkdir()
    (mine / "model.safetensors").write_bytes(b"my own model")
    r = CliRunner().invoke(main, ["download", str(job["id"]), "--server", server.url, "--out", str(mine)])
    assert r.exit_code == 2 and "holds files connectome did not write (model.safetensors)" in r.output, r.output
    assert [p.name for p in mine.iterdir()] == ["model.safetensors"] and (mine / "model.safetensors").read_bytes() == b"my own model"
    got = server.root.parent / "got"
    r = CliRunner().invoke(main, ["download", str(job["id"]), "--server", server.url, "--out", str(got)])
    assert r.exit_code == 0 and (got / "mask.safetensors").is_file(), r.output
    r = CliRunner().invoke(main, ["download", str(job["id"]), "--server", server.url, "--out", str(got)])
    assert r.exit_code == 0, r.output  # a folder it wrote is its own


def test_row7_one_server_per_root(server, data_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    second = subprocess.run([sys.executable, "-m", "connectome", "serve", "--root", str(server.root), "--port", "0"],
                            capture_output=True, text=True, timeout=120, env=env)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert f"{server.root} is served by another connectome server (pid {server.proc.pid})" in lines[0]
    assert server.request("GET", "/api/jobs", token=None).status_code == 200  # the first one still serves


def test_row7_the_lock_goes_with_the_server(tmp_path, data_root):
    first = Server(tmp_path / "srv")
    first.kill9()  # the kernel drops the lock of a process however it ends
    again = Server(tmp_path / "srv")
    try:
        assert again.request("GET", "/api/jobs", token=None).status_code == 200
    finally:
        again.stop()
