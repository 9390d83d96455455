"""Load check of `connectome serve`: 20 queued jobs against one worker, and bursts of 200 concurrent
status requests while they run (from a Python client, and from wrk with 200 connections where it is
installed). Reports p50/p99 latency and whether every job ended `done`.

    OMP_NUM_THREADS=1 python bench/serve.py [--jobs 20] [--concurrency 200] [--bursts 10]

Writes bench/results/serve-cpu.json (serve-cuda.json on a GPU machine).
"""

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import provenance  # noqa: E402
from serve_helpers import Server  # noqa: E402

# The embedded reference model on its own data; small, so that 20 jobs take minutes, not hours.
JOB = {"command": "prune", "model": "lenet_300_100", "remove": "1%", "calib_samples": 500, "eval_samples": 200,
       "batch_size": 250}


async def burst(url: str, ids: list[int], n: int) -> list[float]:
    """n requests at once, half the job list and half single jobs; latency of each in seconds."""
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=n)) as client:
        async def one(i: int) -> float:
            path = "/api/jobs" if i % 2 else f"/api/jobs/{random.choice(ids)}"
            t = time.perf_counter()
            r = await client.get(path)
            r.raise_for_status()
            return time.perf_counter() - t
        return await asyncio.gather(*(one(i) for i in range(n)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), to tell the server's cost from the client's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, connections: int, seconds: int = 10) -> dict | None:
    """Latency percentiles and throughput from wrk (Debian's `wrk`), a load generator in C, so that
    the figures are the server's, not a Python client's; None where wrk is not installed."""
    if not shutil.which("wrk"):
        return None
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    found = {q: float(v) * unit[u] for q, v, u in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"p50_ms": found["50"], "p90_ms": found["90"], "p99_ms": found["99"],
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "non_2xx": int(errors.group(1)) if errors else 0, "socket_errors": "Socket errors" in out}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--bursts", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "serve", "--workers", "1")
        try:
            t0 = time.time()
            ids = [server.submit(**{k: v for k, v in JOB.items() if k != "command"})["id"] for _ in range(args.jobs)]
            submit_s = time.time() - t0
            latencies, bursts, server_cpu = [], [], 0.0
            for b in range(args.bursts):
                t, cpu = time.perf_counter(), cpu_seconds(server.proc.pid)
                lat = asyncio.run(burst(server.url, ids, args.concurrency))
                bursts.append(time.perf_counter() - t)
                server_cpu += cpu_seconds(server.proc.pid) - cpu
                latencies += lat
                print(f"burst {b + 1}: {args.concurrency} requests in {bursts[-1]:.2f} s, "
                      f"p50 {1000 * percentile(lat, 50):.0f} ms, p99 {1000 * percentile(lat, 99):.0f} ms", flush=True)
                time.sleep(1)
            # Sustained load from wrk while jobs still run: the job list, then one job with its points.
            loaded = {"list": wrk(f"{server.url}/api/jobs", args.concurrency),
                      "job": wrk(f"{server.url}/api/jobs/{ids[-1]}", args.concurrency)}
            print(f"wrk: {json.dumps(loaded)}", flush=True)
            jobs = [server.wait(i, timeout=3600) for i in ids]
            total_s = time.time() - t0
        finally:
            server.stop()
    states = {s: sum(j["state"] == s for j in jobs) for s in ("done", "failed", "cancelled")}
    lost = args.jobs - len(jobs) + states["failed"] + states["cancelled"]
    result = {"benchmark": "serve", **provenance(), "jobs": args.jobs, "workers": 1, "job": JOB,
              "concurrency": args.concurrency, "bursts": args.bursts, "requests": len(latencies),
              "latency_ms": {"p50": 1000 * percentile(latencies, 50), "p99": 1000 * percentile(latencies, 99),
                             "max": 1000 * max(latencies), "mean": 1000 * statistics.mean(latencies)},
              "burst_seconds": {"median": statistics.median(bursts), "max": max(bursts)},
              "server_cpu_ms_per_request": 1000 * server_cpu / len(latencies), "wrk": loaded,
              "submit_seconds": submit_s, "total_seconds": total_s, "states": states, "lost_jobs": lost,
              "all_done_in_order": [j["id"] for j in sorted(jobs, key=lambda j: j["started"])] == ids}
    out = HERE / "results" / f"serve-{'cuda' if 'CPU' not in result['device'] else 'cpu'}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("latency_ms", "server_cpu_ms_per_request", "states", "lost_jobs",
                                             "total_seconds")}, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
