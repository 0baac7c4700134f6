"""The per-worker loop: the same function under the local backend, under Ray Train and in unit tests. It knows
nothing of what it trains: the task takes the steps, the parts do what happens around them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gan_dist.config import Config
from gan_dist.data.shards import Manifest
from gan_dist.tracking import RunTracker, wandb_run_id
from gan_dist.train.context import WorkerContext
from gan_dist.train.generation import GenerationTask
from gan_dist.eval.measure import EVAL_LOGGED
from gan_dist.train.parts import (Checkpoints, Evaluation, MetricWindow, NonFiniteRecovery, Part, PreviewGrids,
                                  TrainState, evaluation_kind, restore_newest)
from gan_dist.train.task import Task

# What a log step records: the loop's own keys and the task's (and the evaluation's, when it runs).
LOGGED_METRICS = ("step", "images_seen", "img_per_s", "skipped_updates", "checkpoint_seconds", "epoch",
                  "gpu_mem_gb", *GenerationTask.METRICS)


def logged_metrics(cfg: Config, manifest: Manifest) -> tuple[str, ...]:
    """What this run will log: run.keep_best must name one of them."""
    return LOGGED_METRICS + (EVAL_LOGGED if evaluation_kind(cfg, manifest) != "off" else ())


@dataclass
class LoopResult:
    step: int
    resumed_from: int | None


def build_task(cfg: Config, manifest: Manifest, device: torch.device, rank: int = 0, world_size: int = 1) -> Task:
    """The task a config trains (image generation, unconditional or class-conditional, is the one so far)."""
    return GenerationTask(cfg, manifest, device, rank, world_size)


def checkpoint_meta(ctx: WorkerContext) -> dict:
    """What meta.json records about the data, for resume checks and for inference (the class names)."""
    m = ctx.manifest
    return {"data": {"resolution": m.resolution, "channels": m.channels, "content_hash": m.content_hash,
                     "class_names": m.class_names}}


def train_loop(ctx: WorkerContext, cfg: Config) -> LoopResult:
    t = cfg.train
    task = build_task(cfg, ctx.manifest, ctx.device, ctx.rank, ctx.world_size)
    state, skipped = TrainState(), []
    found = restore_newest(task, ctx, cfg, skipped)
    if found is not None:
        state = found[1]
    tracker = None
    if ctx.rank == 0:
        m = ctx.manifest
        config = {**cfg.model_dump(), "dataset": {"count": m.count, "resolution": m.resolution,
                                                  "channels": m.channels}, "world_size": ctx.world_size}
        tracker = RunTracker(ctx.run_uri, t.steps, cfg.log, wandb_run_id(ctx.run_uri), config)
        tracker.message(ctx.placement.reason)
        tracker.message(task.features.describe())
        for reason in skipped:
            tracker.message(f"warning: skipping {reason}")
        if found is not None:
            tracker.message(f"resumed from step {state.step} ({found[0]})")

    checkpoints = Checkpoints(task, ctx, cfg, checkpoint_meta(ctx))
    evaluation = Evaluation(task, ctx, cfg, tracker, checkpoints)
    parts: list[Part] = [evaluation, MetricWindow(task, ctx, cfg, tracker, checkpoints, evaluation),
                         NonFiniteRecovery(task, ctx, cfg, tracker), PreviewGrids(task, cfg, tracker), checkpoints]
    images_per_step = t.real_per_step * ctx.world_size
    batches = ctx.batches(task.datasets, state.positions)
    while state.step < t.steps:
        data, positions = next(batches)
        out = task.train_step(data, state.step)
        state = TrainState(state.step + 1, state.images_seen + images_per_step, positions)
        for part in parts:
            restored = part(state, out)
            if restored is not None:  # back to a checkpoint: the rest of this step's parts do not apply
                state, batches = restored, ctx.batches(task.datasets, restored.positions)
                break
    if tracker:
        tracker.close()
    return LoopResult(state.step, found and found[1].step)
