"""Data-parallel RLOO across processes with ``torch.distributed`` (``torchrun`` or ``accelerate launch``).

Every rank draws the same prompts for a step, keeps its share (``prompts[rank::world]``), samples them
with per-prompt seeds (so a prompt's completions do not depend on which rank holds it), and computes
its part of the loss with the *global* token count as the denominator. The gradients are summed across
ranks before clipping, so every rank takes the same optimizer step and ends with the same vector as a
single process with the same global batch (up to the order of floating-point sums). Only the trained
tensors are communicated: for a steering vector, a few kilobytes per step.

Launch (one process per GPU; ``gloo`` on CPUs)::

    torchrun --nproc_per_node 8 -m steerlib.train --preset qwen2.5-math-7b --layer 27

Example:
    >>> dp = DataParallel(rank=1, world=2)
    >>> dp.shard(["a", "b", "c", "d", "e"])
    ['b', 'd']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

__all__ = ["DataParallel", "init_from_env"]

T = TypeVar("T")


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel group (``world == 1``: a single process, no communication)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this rank writes run directories and prints progress."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of a step's items (every ``world``-th, from ``rank``)."""
        return list(items[self.rank :: self.world])

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (float64)."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def sum_grads(self, params: Iterable[torch.Tensor]) -> None:
        """Sum the gradients of ``params`` over the ranks in place (a missing gradient counts as zero)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def init_from_env(backend: str | None = None) -> DataParallel:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the environment
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...); a plain ``python`` run is a group of one. The backend
    is ``nccl`` when CUDA is available, else ``gloo``; on CUDA each rank takes the GPU ``LOCAL_RANK``."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DataParallel()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return DataParallel(dist.get_rank(), dist.get_world_size())
