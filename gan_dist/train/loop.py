"""The per-worker loop: the same function under the local backend, under Ray Train and in unit tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gan_dist.checkpoint import load_state
from gan_dist.config import Config
from gan_dist.data.reader import DataPosition
from gan_dist.runtime.context import WorkerContext
from gan_dist.tracking import RunTracker
from gan_dist.train.task import GenerationTask

GRID_SIZE = 64


@dataclass
class TrainState:
    """Counters and data position; the nets and optimizers live in the task."""

    step: int = 0
    images_seen: int = 0
    position: DataPosition = field(default_factory=DataPosition)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "images_seen": self.images_seen,
                "position": {"epoch": self.position.epoch, "batch": self.position.batch}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainState":
        return cls(raw["step"], raw["images_seen"], DataPosition(**raw["position"]))


@dataclass
class LoopResult:
    step: int
    resumed_from: int | None
    metrics: dict[str, float]


def fixed_latents(task: GenerationTask, seed: int) -> torch.Tensor:
    """The same latents for every grid of a run (and its resumes), so grids show progress, not noise."""
    return task.latents(GRID_SIZE, seed ^ 0x5A5A5A5A).clone()


def train_loop(ctx: WorkerContext, cfg: Config) -> LoopResult:
    t = cfg.train
    task = GenerationTask(cfg, ctx.manifest.resolution, ctx.manifest.channels, ctx.device, ctx.world_size > 1)
    tracker = RunTracker(ctx.run_uri, t.steps) if ctx.rank == 0 else None
    grid_z = fixed_latents(task, t.seed)

    state, resumed_from = TrainState(), None
    checkpoint = ctx.latest_checkpoint()
    if checkpoint is not None:
        saved = load_state(checkpoint, ctx.device)
        task.load_state_dict(saved)
        state = TrainState.from_dict(saved["train"])
        resumed_from = state.step
        if tracker:
            tracker.message(f"resumed from step {state.step} ({checkpoint})")

    metrics: dict[str, float] = {}
    window_start, window_images = time.perf_counter(), 0
    batches = ctx.batches(state.position)
    while state.step < t.steps:
        real, position = next(batches)
        out = task.step(real, state.step, ctx.rank)
        state.step += 1
        state.images_seen += real.shape[0] * ctx.world_size
        state.position = position
        window_images += real.shape[0] * ctx.world_size

        last = state.step == t.steps
        if state.step % t.log_every == 0 or last:
            # .item() synchronises the device: only at log steps, never every step.
            elapsed = time.perf_counter() - window_start
            metrics = {"step": state.step, "images_seen": state.images_seen,
                       **{k: v.item() for k, v in out.items()}, "img_per_s": window_images / max(elapsed, 1e-9)}
            if tracker:
                tracker.log(metrics)
            window_start, window_images = time.perf_counter(), 0
        if tracker and (state.step % t.sample_every == 0 or last):
            tracker.sample_grid(state.step, task.sample(grid_z))
        if state.step % t.checkpoint_every == 0 or last:
            divergence = task.rank_divergence()
            if tracker and divergence:
                tracker.message(f"warning: replicas differ across ranks at step {state.step} (by {divergence:.3g})")
            payload = {**task.state_dict(), "train": state.to_dict()} if ctx.rank == 0 else None
            meta = {"step": state.step, "metrics": metrics, "config": cfg.model_dump(), "rank_divergence": divergence,
                    "world_size": ctx.world_size, "data": {"resolution": task.resolution, "channels": task.channels}}
            ctx.save_checkpoint(state.step, payload, meta)
    return LoopResult(state.step, resumed_from, metrics)
