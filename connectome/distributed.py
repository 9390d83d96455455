"""torch.distributed, the standard engine: `torchrun --nproc_per_node=N -m connectome prune ...`.

Batches are dealt round-robin to the ranks; every sum (statistics, losses, counts) is all-reduced, so
each rank makes every mask decision on identical numbers and holds the same mask. Rank 0 alone writes.
"""

import os

import torch
import torch.distributed as dist


def init_from_env(device: str) -> str:
    """Join the process group that torchrun describes in the environment; returns this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_size()[0] == 0


def all_reduce_(*tensors: torch.Tensor) -> None:
    if rank_and_size()[1] > 1:
        for t in tensors:
            dist.all_reduce(t)


def barrier() -> None:
    if rank_and_size()[1] > 1:
        dist.barrier()
