"""The per-worker loop: the same function under the local backend, under Ray Train and in unit tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gan_dist import checkpoint as ckpt
from gan_dist.config import Config
from gan_dist.data.reader import DataPosition
from gan_dist.errors import UserError
from gan_dist.runtime.context import WorkerContext
from gan_dist.tracking import RunTracker, wandb_run_id
from gan_dist.train import rng
from gan_dist.train.task import GenerationTask

GRID_SIZE = 64
# What a log step records: the loop's own keys and the task's; run.keep_best must name one of them.
LOGGED_METRICS = ("step", "images_seen", "img_per_s", "skipped_updates", "checkpoint_seconds", "epoch",
                  "gpu_mem_gb", *GenerationTask.METRICS)


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


def restore(task: GenerationTask, ctx: WorkerContext, checkpoint: str) -> TrainState:
    """Load a checkpoint into the task and this rank's RNG; every rank reads the same files."""
    saved = ckpt.load_state(checkpoint, ctx.device)
    try:
        task.load_state_dict(saved)
        rng.restore(saved.get("rng", []), ctx.rank)
        return TrainState.from_dict(saved["train"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # loads, but is not this task's state
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ckpt.CorruptCheckpoint(f"{checkpoint}: state.pt does not hold this run's nets and optimizers "
                                     f"({detail})") from None


def restore_newest(task: GenerationTask, ctx: WorkerContext, cfg: Config,
                   skipped: list[str]) -> tuple[str, TrainState] | None:
    """The run's newest checkpoint that loads, older ones standing in for any that do not (each one's reason
    goes to `skipped`); for a run that has none yet, --resume-from's. Corruption is in the bytes, so every rank
    skips the same checkpoints and they all restore the same one."""
    for uri in ckpt.newest_first(ctx.run_uri, ctx.latest_checkpoint()):
        try:
            return uri, restore(task, ctx, uri)
        except ckpt.CorruptCheckpoint as exc:
            skipped.append(str(exc))
    if skipped:  # starting over would overwrite checkpoints that a person may still be able to repair
        raise UserError(f"no checkpoint of this run loads ({'; '.join(skipped)}); nothing was overwritten: "
                        f"restore or delete them, or start a new run (--name)")
    if cfg.run.resume_from:
        return cfg.run.resume_from, restore(task, ctx, cfg.run.resume_from)
    return None


def train_loop(ctx: WorkerContext, cfg: Config) -> LoopResult:
    t = cfg.train
    task = GenerationTask(cfg, ctx.manifest.resolution, ctx.manifest.channels, ctx.device, ctx.world_size > 1)
    grid_z = fixed_latents(task, t.seed)

    state, resumed_from, skipped = TrainState(), None, []
    found = restore_newest(task, ctx, cfg, skipped)
    if found is not None:
        checkpoint, state = found
        resumed_from = state.step
    tracker = None
    if ctx.rank == 0:
        config = {**cfg.model_dump(), "dataset": {"count": ctx.manifest.count, "resolution": task.resolution,
                                                  "channels": task.channels}, "world_size": ctx.world_size}
        tracker = RunTracker(ctx.run_uri, t.steps, cfg.log, wandb_run_id(ctx.run_uri), config)
        tracker.message(ctx.placement.reason)
        tracker.message(task.features.describe())
        for reason in skipped:
            tracker.message(f"warning: skipping {reason}")
        if found is not None:
            tracker.message(f"resumed from step {state.step} ({checkpoint})")

    metrics: dict[str, float] = {}
    window_start, window_images, skipped_before = time.perf_counter(), 0, 0.0
    checkpoint_seconds = 0.0  # time spent writing and uploading checkpoints, to watch their cost
    batches = ctx.batches(state.position)
    while state.step < t.steps:
        real, position = next(batches)
        out = task.step(real, state.step, ctx.rank)
        state.step += 1
        state.images_seen += real.shape[0] * ctx.world_size
        state.position = position
        window_images += real.shape[0] * ctx.world_size
        if tracker:
            tracker.progress(state.step)

        last = state.step == t.steps
        if state.step % t.log_every == 0 or last:
            # .item() synchronises the device: only at log steps, never every step.
            elapsed = time.perf_counter() - window_start
            skipped_total = task.skipped_total.item()
            metrics = {"step": state.step, "images_seen": state.images_seen,
                       **{k: v.item() for k, v in out.items()}, "img_per_s": window_images / max(elapsed, 1e-9),
                       "skipped_updates": skipped_total - skipped_before, "checkpoint_seconds": checkpoint_seconds,
                       "epoch": state.position.epoch, **task.learning_rates(), **_device_memory(ctx.device)}
            skipped_before = skipped_total
            if tracker:
                tracker.log(metrics)
                if metrics["skipped_updates"]:
                    tracker.log_event({"event": "nonfinite_skip", "step": state.step,
                                       "skipped_updates": int(metrics["skipped_updates"])})
            window_start, window_images = time.perf_counter(), 0
            if task.bad_streak.item() >= t.nonfinite_patience:
                state = _recover_from_divergence(task, ctx, cfg, tracker, state.step)
                batches = ctx.batches(state.position)
                continue
        if tracker and (state.step % t.sample_every == 0 or last):
            tracker.sample_grid(state.step, task.sample(grid_z))
        if state.step % t.checkpoint_every == 0 or last:
            started = time.perf_counter()
            _save(task, ctx, cfg, state, metrics)
            checkpoint_seconds += time.perf_counter() - started
    if tracker:
        tracker.close()
    return LoopResult(state.step, resumed_from, metrics)


def _device_memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30}


def _save(task: GenerationTask, ctx: WorkerContext, cfg: Config, state: TrainState, metrics: dict) -> None:
    divergence = task.rank_divergence()  # collectives first: every rank takes part
    rng_states = rng.gather_all()
    if ctx.rank == 0 and divergence:
        print(f"warning: replicas differ across ranks at step {state.step} (by {divergence:.3g})", flush=True)
    payload = {**task.state_dict(), "train": state.to_dict(), "rng": rng_states} if ctx.rank == 0 else None
    meta = {"step": state.step, "metrics": metrics, "config": cfg.model_dump(), "rank_divergence": divergence,
            "world_size": ctx.world_size,
            "data": {"resolution": task.resolution, "channels": task.channels,
                     "content_hash": ctx.manifest.content_hash},
            "wandb_run_id": wandb_run_id(ctx.run_uri)}
    ctx.save_checkpoint(state.step, payload, meta)
    if ctx.rank == 0:
        r = cfg.run
        ckpt.prune(ctx.run_uri, r.keep_checkpoints, state.step, r.keep_best, r.keep_best_mode)


def _recover_from_divergence(task: GenerationTask, ctx: WorkerContext, cfg: Config, tracker: RunTracker | None,
                             step: int) -> TrainState:
    """Too many non-finite updates in a row: back to the newest checkpoint with lower learning rates."""
    skipped: list[str] = []
    found = restore_newest(task, ctx, cfg, skipped)
    if found is None:
        raise UserError(f"training diverged (non-finite gradients) at step {step}, before the first checkpoint; "
                        f"lower the learning rates, e.g. --set train.lr_d={cfg.train.lr_d / 2:g}")
    _, state = found
    for reason in skipped if tracker else ():
        tracker.message(f"warning: skipping {reason}")
    task.scale_learning_rates(cfg.train.nonfinite_lr_factor)
    task.bad_streak.zero_()
    if tracker:
        tracker.log_event({"event": "nonfinite_restore", "step": step, "restored_step": state.step,
                           **task.learning_rates()})
    return state
