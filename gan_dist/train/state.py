"""The loop's counters and data positions (the nets and optimizers live in the task), and what the parts of one
step share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from gan_dist.data.placement import Positions
from gan_dist.data.reader import DataPosition


@dataclass
class TrainState:
    """Counters and data positions; the nets and optimizers live in the task."""

    step: int = 0
    images_seen: int = 0
    positions: Positions = field(default_factory=dict)
    workers: list[list[int]] = field(default_factory=list)  # [step, workers from that step], one per size change

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "images_seen": self.images_seen,
                "positions": {name: vars(at) for name, at in self.positions.items()}, "workers": self.workers}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainState":
        # Checkpoints written before datasets had names hold one "position": the train dataset's.
        positions = raw["positions"] if "positions" in raw else {"train": raw["position"]}
        return cls(raw["step"], raw["images_seen"], {name: DataPosition(**at) for name, at in positions.items()},
                   [list(change) for change in raw.get("workers", [])])

    def on_workers(self, count: int) -> int | None:
        """Record that the run goes on with `count` workers from this step; the count before, when it changed."""
        before = self.workers[-1][1] if self.workers else None
        if before != count:
            self.workers.append([self.step, count])
        return before if before not in (None, count) else None


@dataclass
class StepRecord:
    """What one step's parts share, filled in the loop's order: the state the step brought the run to and the task's
    outputs; then the evaluation's numbers (when it ran at this step), then the metrics line (at a log step). A part
    reads what parts before it wrote here, never another part's attributes."""

    state: TrainState
    out: dict[str, torch.Tensor]
    checkpoint_seconds: float = 0.0  # the run's time writing checkpoints so far: the loop carries it on
    evaluated: dict[str, float] = field(default_factory=dict)
    evaluating: tuple[int, ...] = ()  # steps whose evaluation off the training path has not landed yet
    logged: dict[str, float] = field(default_factory=dict)
