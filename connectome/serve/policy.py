"""What a server allows (user code, data roots, ranks, GPUs), and the small parsing both the job
check (spec) and the feasibility check (feasible) need."""

from dataclasses import dataclass
from pathlib import Path

SOURCE = "job"  # how messages name a submitted body
DEFAULT_MAX_WORK = 1e9  # images through the model: about 300 times the learned default on 100,000 ImageNet images
MAX_WORK = 1e18  # the largest --max-work a server takes: more than any server passes in years


@dataclass
class Policy:
    allow_user_code: bool = False
    data_roots: tuple[Path, ...] = ()
    max_nproc: int = 1
    gpus: int = 0  # GPUs of the server (a job that asks for CUDA on a server without one is refused)
    max_work: float = DEFAULT_MAX_WORK  # images through the model one job may ask for (connectome.serve.work)


def data_kind(value: str) -> tuple[str, str | None] | None:
    """(kind, path or None) of a data spec `KIND[:PATH]`; None when `value` is not one."""
    from connectome.data.specs import parse_spec
    from connectome.errors import ConnectomeError

    try:
        return parse_spec(value)
    except ConnectomeError:
        return None
