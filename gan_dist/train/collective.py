"""The collectives the loop's parts and the step need beyond DDP, no-ops in a single process."""

from __future__ import annotations

from typing import Any

import torch
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


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a device tensor over every rank (a collective); no host round trip."""
    if not distributed():
        return value
    total = value.clone()
    dist.all_reduce(total)  # gloo has no AVG
    return total / dist.get_world_size()


def barrier() -> None:
    if distributed():
        dist.barrier()
