"""What every benchmark result carries: the commit, the machine and the date."""

import datetime
import os
import platform
import subprocess

import torch


def provenance() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        # Code only: results that other benchmarks are writing meanwhile do not make a commit dirty.
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "connectome",
                                     "recipes", "bench/*.py", "pyproject.toml"], cwd=root,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU: {platform.processor() or platform.machine()}"
    return {"commit": commit + ("+dirty" if dirty else ""), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.node()} ({os.cpu_count()} cores)", "device": device,
            "threads": torch.get_num_threads(), "torch": torch.__version__}
