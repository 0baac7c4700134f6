"""What the loop may ask of the process it runs in. Two implementations: local (this process) and Ray Train."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from gan_dist.config import Config
from gan_dist.data.placement import Dataset, Placement, Positions
from gan_dist.data.reader import Batch


@dataclass(frozen=True)
class Landed:
    """An evaluation off the training path that has finished: the numbers of the step it measured, or why it
    failed."""

    step: int
    metrics: dict[str, float] | None
    error: str | None = None


class OffPathEvaluations(Protocol):
    """Measurements of a copy of the task's exported nets outside the training workers: rank 0 hands them over and
    collects what has finished without waiting (but at the end of the run)."""

    def submit(self, step: int, exports: dict[str, dict[str, torch.Tensor]]) -> None:
        """Measure `exports` (CPU tensors, as Task.export() names them), the nets of `step`; returns at once."""
        ...

    def landed(self, wait: bool = False) -> list[Landed]:
        """The evaluations finished since the last call, by step; with `wait`, every one still running."""
        ...

    def pending(self) -> tuple[int, ...]:
        """The steps submitted whose evaluation has not landed."""
        ...


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

    def off_path_evaluations(self, cfg: Config) -> OffPathEvaluations | None:
        """Where this backend evaluates off the training path (the same answer on every rank; only rank 0 submits),
        or None: it evaluates inline."""
        ...
