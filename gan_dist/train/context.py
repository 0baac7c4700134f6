"""What the loop may ask of the process it runs in. Two implementations: local (this process) and Ray Train."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch

from gan_dist.data.placement import Dataset, Placement, Positions
from gan_dist.data.reader import Batch


class WorkerContext(Protocol):
    rank: int
    world_size: int
    device: torch.device
    datasets: dict[str, Dataset]  # by name, as this worker reads them (evaluation caches live beside them)
    run_uri: str
    placements: dict[str, Placement]  # each dataset resident on the device, or streamed; logged at the start

    def batches(self, names: tuple[str, ...], start: Positions) -> Iterator[tuple[dict[str, Batch], Positions]]:
        """One batch of each named dataset per step (this rank's part of each epoch), with the positions after
        them, from `start`."""
        ...

    def latest_checkpoint(self) -> str | None:
        """URI of the newest complete checkpoint of this run, or None on a fresh start."""
        ...

    def save_checkpoint(self, step: int, state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        """Every rank calls this at the same steps; `state` is given on rank 0 only (None elsewhere)."""
        ...
