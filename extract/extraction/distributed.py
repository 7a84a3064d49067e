"""Extraction across processes with torch.distributed (``torchrun --nproc-per-node N``).

Blocks (split, checkpoint, condition, sample chunk) are dealt round-robin to the ranks, so
every chunk has exactly one writer; rank 0 creates the store, writes the classifier and,
after every rank has finished, verifies every chunk and marks the store complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ncprobe.data.errors import NcprobeError


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether this rank computes and writes work item ``index``."""
        return index % self.world == self.rank


def from_environment() -> Rank:
    """The rank set by torchrun (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""
    try:
        return Rank(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise NcprobeError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") \
            from None


def start(rank: Rank, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on the CPU) when there are several ranks."""
    if rank.world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL collectives run on the current device
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def stop(rank: Rank) -> None:
    if rank.world > 1 and dist.is_initialized():
        # the ranks leave together: torch 2.5's gloo could hang in destroy_process_group
        # when the other rank had already exited (seen in the minimum-versions environment)
        dist.barrier()
        dist.destroy_process_group()


def share(rank: Rank, value):
    """Rank 0's ``value`` on every rank (one object broadcast)."""
    if rank.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_failed(rank: Rank, failed: bool, device: torch.device) -> bool:
    """Whether any rank failed (every rank must call this)."""
    if rank.world == 1:
        return failed
    # NCCL reduces tensors on the GPU only; gloo on the CPU
    t = torch.tensor([1 if failed else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
