"""The per-worker loop: the same function under the local backend, under Ray Train and in unit tests. It knows
nothing of what it trains: the task takes the steps, the parts do what happens around them."""

from __future__ import annotations

from dataclasses import dataclass


from gan_dist.config import Config
from gan_dist.data.shards import Manifest
from gan_dist.tracking import RunTracker, wandb_run_id
from gan_dist.train.context import WorkerContext
from gan_dist.train.parts import Checkpoints, Evaluation, MetricWindow, NonFiniteRecovery, Part, PreviewGrids
from gan_dist.train.resume import restore_newest
from gan_dist.train.state import StepRecord, TrainState
from gan_dist.train.task import Task
from gan_dist.train.tasks import build_task, task_class

# What a log step records: the loop's own keys and the task's (and the evaluation's, when it runs).
LOOP_METRICS = ("step", "images_seen", "workers", "img_per_s", "skipped_updates", "checkpoint_seconds", "epoch",
                "gpu_mem_gb")


def logged_metrics(cfg: Config, manifests: dict[str, Manifest]) -> tuple[str, ...]:
    """What this run will log: run.keep_best must name one of them."""
    return LOOP_METRICS + task_class(cfg).logged_metrics(cfg, manifests)


@dataclass
class LoopResult:
    step: int
    resumed_from: int | None


def describe_data(manifest: Manifest) -> dict:
    return {"resolution": manifest.resolution, "channels": manifest.channels, "content_hash": manifest.content_hash,
            "class_names": manifest.class_names,
            **({"input_channels": manifest.input_channels} if manifest.paired else {})}


def checkpoint_meta(ctx: WorkerContext, task: Task) -> dict:
    """What meta.json records for resume checks and for inference: each dataset by name (the class names), a
    generator's one as "data" (what sampling reads), and what the checkpoint can be used for (the task's exports
    and the inference uses each serves)."""
    datasets = {name: describe_data(data.manifest) for name, data in ctx.datasets.items()}
    return {"datasets": datasets, **({"data": datasets["train"]} if "train" in datasets else {}),
            "exports": {name: list(uses) for name, uses in task.EXPORTS.items()}}


def train_loop(ctx: WorkerContext, cfg: Config) -> LoopResult:
    t = cfg.train
    task = build_task(cfg, ctx.datasets, ctx.device, ctx.rank, ctx.world_size)
    state, skipped = TrainState(), []
    found = restore_newest(task, ctx, cfg, skipped)
    if found is not None:
        state = found[1]
    resized_from = state.on_workers(ctx.world_size)
    images_per_step = cfg.step_images(ctx.world_size)  # an elastic run's: the same at every size
    tracker = None
    if ctx.rank == 0:
        data = {name: {"count": d.manifest.count, "resolution": d.manifest.resolution,
                       "channels": d.manifest.channels, "uri": d.uri} for name, d in ctx.datasets.items()}
        config = {**cfg.model_dump(), "datasets": data, "world_size": ctx.world_size}
        tracker = RunTracker(ctx.run_uri, t.steps, cfg.log, wandb_run_id(ctx.run_uri), config)
        for chosen in ctx.placements.values():
            tracker.message(chosen.reason)
        tracker.message(task.features.describe())
        for reason in skipped:
            tracker.message(f"warning: skipping {reason}")
        if found is not None:
            tracker.message(f"resumed from step {state.step} ({found[0]})")
        if resized_from is not None:
            tracker.log_event({"event": "resize", "step": state.step, "workers": ctx.world_size,
                               "workers_before": resized_from, "images_per_step": images_per_step})

    # In this order: each part reads the step's record as the parts before it left it.
    evaluation = Evaluation(task, ctx, cfg, tracker)
    parts: list[Part] = [evaluation, MetricWindow(task, ctx, cfg, tracker),
                         NonFiniteRecovery(task, ctx, cfg, tracker), PreviewGrids(task, cfg, tracker),
                         Checkpoints(task, ctx, cfg, checkpoint_meta(ctx, task))]
    batches = ctx.batches(task.datasets, state.positions)
    checkpoint_seconds = 0.0
    while state.step < t.steps:
        data, positions = next(batches)
        out = task.step(data, state.step, state.images_seen)
        state = TrainState(state.step + 1, state.images_seen + images_per_step, positions, state.workers)
        record = StepRecord(state, out, checkpoint_seconds)
        for part in parts:
            restored = part(record)
            if restored is not None:  # back to a checkpoint: the rest of this step's parts do not apply
                state, batches = restored, ctx.batches(task.datasets, restored.positions)
                state.on_workers(ctx.world_size)  # a checkpoint from before a resize
                break
        checkpoint_seconds = record.checkpoint_seconds
    evaluation.finish(state.step)
    if tracker:
        tracker.close()
    return LoopResult(state.step, found and found[1].step)
