"""The two collectives the loop's parts need beyond DDP, no-ops in a single process."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather(value: Any) -> list[Any]:
    """Every rank's picklable `value`, in rank order, on every rank (a collective: every rank calls it)."""
    if not distributed():
        return [value]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, value)
    return everyone


def barrier() -> None:
    if distributed():
        dist.barrier()
