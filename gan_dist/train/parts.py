"""What the loop does around the training step, as parts that each own their schedule: evaluation, the metric
window, the non-finite recovery, preview grids and checkpoints. The loop calls them in that order after every step
with the step's record (state.StepRecord): each reads what the parts before it wrote there."""

from __future__ import annotations

import time
from typing import Any, Protocol

import torch

from gan_dist import checkpoint as ckpt
from gan_dist.config import Config
from gan_dist.errors import UserError
from gan_dist.tracking import RunTracker, wandb_run_id
from gan_dist.train import collective, rng
from gan_dist.train.context import Landed, WorkerContext
from gan_dist.train.offpath import record_landed, snapshot
from gan_dist.train.resume import restore_newest
from gan_dist.train.state import StepRecord, TrainState
from gan_dist.train.task import Task


class Part(Protocol):
    def __call__(self, record: StepRecord) -> TrainState | None:
        """After the step that brought the run to `record.state.step`; a state to go on from replaces the loop's."""
        ...


def due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


class Checkpoints:
    """Every checkpoint_every steps and at the last: the task's state, its exports and meta.json, then retention."""

    def __init__(self, task: Task, ctx: WorkerContext, cfg: Config, meta: dict[str, Any]):
        self.task, self.ctx, self.cfg, self.meta = task, ctx, cfg, meta
        self.metrics: dict[str, float] = {}  # the newest log step's and evaluation's, recorded with each checkpoint

    def __call__(self, record: StepRecord) -> None:
        if record.logged:
            self.metrics = dict(record.logged)
        self.metrics.update(record.evaluated)
        if due(record.state.step, self.cfg.train.checkpoint_every, self.cfg.train.steps):
            started = time.perf_counter()
            self.save(record.state, record.evaluating)
            record.checkpoint_seconds += time.perf_counter() - started

    def save(self, state: TrainState, evaluating: tuple[int, ...] = ()) -> None:
        ctx, task = self.ctx, self.task
        divergence = task.rank_divergence()  # collectives first: every rank takes part
        rng_states = rng.gather_all()
        rank_states = collective.gather(task.rank_state())
        if ctx.rank == 0 and divergence:
            print(f"warning: replicas differ across ranks at step {state.step} (by {divergence:.3g})", flush=True)
        payload = None
        if ctx.rank == 0:
            payload = {**task.state_dict(), "train": state.to_dict(), "rng": rng_states, "ranks": rank_states,
                       ckpt.EXPORTS: task.export()}
        meta = {"step": state.step, "images_seen": state.images_seen, "metrics": self.metrics,
                "config": self.cfg.model_dump(), "rank_divergence": divergence, "world_size": ctx.world_size, "workers": state.workers, **self.meta,
                "wandb_run_id": wandb_run_id(ctx.run_uri)}
        ctx.save_checkpoint(state.step, payload, meta)
        if ctx.rank == 0:
            r = self.cfg.run
            ckpt.prune(ctx.run_uri, r.keep_checkpoints, state.step, r.keep_best, r.keep_best_mode, evaluating)


class MetricWindow:
    """Every log_every steps and at the last: the step's outputs and the loop's counters over the window since
    the previous log step, to metrics.jsonl, W&B and the console (rank 0). `.item()` synchronises the device:
    only here, never every step."""

    def __init__(self, task: Task, ctx: WorkerContext, cfg: Config, tracker: RunTracker | None):
        self.task, self.ctx, self.cfg, self.tracker = task, ctx, cfg, tracker
        self.images_per_step = cfg.step_images(ctx.world_size)
        self.started, self.images, self.skipped_before = time.perf_counter(), 0, 0.0

    def __call__(self, record: StepRecord) -> None:
        state, out, evaluated = record.state, record.out, record.evaluated
        self.images += self.images_per_step
        if self.tracker:
            self.tracker.progress(state.step)
        if not due(state.step, self.cfg.train.log_every, self.cfg.train.steps):
            return
        # Training throughput: an evaluation in this window is timed on its own (eval_seconds).
        elapsed = time.perf_counter() - self.started - evaluated.get("eval_seconds", 0.0)
        skipped_total = self.task.nonfinite.total.item()
        metrics = {"step": state.step, "images_seen": state.images_seen, "workers": self.ctx.world_size,
                   **{k: v.item() for k, v in out.items()},
                   "img_per_s": self.images / max(elapsed, 1e-9),
                   "skipped_updates": skipped_total - self.skipped_before,
                   "checkpoint_seconds": record.checkpoint_seconds,
                   "epoch": next(iter(state.positions.values())).epoch,  # of the first dataset
                   **self.task.learning_rates(), **_device_memory(self.ctx.device), **evaluated}
        self.skipped_before = skipped_total
        record.logged = metrics
        if self.tracker:
            self.tracker.log(metrics)
            if metrics["skipped_updates"]:
                self.tracker.log_event({"event": "nonfinite_skip", "step": state.step,
                                        "skipped_updates": int(metrics["skipped_updates"])})
        self.started, self.images = time.perf_counter(), 0


def _device_memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {"gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30}


class NonFiniteRecovery:
    """At log steps: after nonfinite_patience skipped updates in a row, back to the newest checkpoint with the
    learning rates multiplied by nonfinite_lr_factor."""

    def __init__(self, task: Task, ctx: WorkerContext, cfg: Config, tracker: RunTracker | None):
        self.task, self.ctx, self.cfg, self.tracker = task, ctx, cfg, tracker

    def __call__(self, record: StepRecord) -> TrainState | None:
        t, state = self.cfg.train, record.state
        if not due(state.step, t.log_every, t.steps) or self.task.nonfinite.streak.item() < t.nonfinite_patience:
            return None
        skipped: list[str] = []
        found = restore_newest(self.task, self.ctx, self.cfg, skipped)
        if found is None:
            raise UserError(f"training diverged (non-finite gradients) at step {state.step}, before the first "
                            f"checkpoint; lower the learning rates, e.g. --set train.lr_d={t.lr_d / 2:g}")
        _, restored = found
        self.task.scale_learning_rates(t.nonfinite_lr_factor)
        self.task.nonfinite.streak.zero_()
        if self.tracker:
            for reason in skipped:
                self.tracker.message(f"warning: skipping {reason}")
            self.tracker.log_event({"event": "nonfinite_restore", "step": state.step, "restored_step": restored.step,
                                    **self.task.learning_rates()})
        return restored


class PreviewGrids:
    """Every sample_every steps and at the last: the task's preview grid to samples/ and W&B (rank 0)."""

    def __init__(self, task: Task, cfg: Config, tracker: RunTracker | None):
        self.task, self.cfg, self.tracker = task, cfg, tracker

    def __call__(self, record: StepRecord) -> None:
        step = record.state.step
        if self.tracker and due(step, self.cfg.train.sample_every, self.cfg.train.steps):
            self.tracker.write_grid(step, self.task.preview())


class Evaluation:
    """Every eval.every steps (0: at each checkpoint) and at the last: the task's measurement. Inline, the numbers go
    to the step's record, whence the metrics line and the checkpoint's meta.json take them. Off the training path
    (eval.where; the backend's evaluator), rank 0 hands over a CPU copy of the task's exports and goes on; each
    result that lands later goes to that step's metrics line and checkpoint (train/offpath.py); the record names the
    steps still being evaluated, whose checkpoints retention keeps."""

    def __init__(self, task: Task, ctx: WorkerContext, cfg: Config, tracker: RunTracker | None):
        self.task, self.ctx, self.cfg, self.tracker = task, ctx, cfg, tracker
        self.every = cfg.eval.every or cfg.train.checkpoint_every
        measures = task.measured(cfg, {name: data.manifest for name, data in ctx.datasets.items()})
        self.off_path = ctx.off_path_evaluations(cfg) if measures and cfg.eval.where != "inline" else None
        self.measure = None if self.off_path else task.measure(ctx)

    def __call__(self, record: StepRecord) -> None:
        step = record.state.step
        if self.off_path is not None:
            self._hand_over(record)
            return
        if self.measure is None or not due(step, self.every, self.cfg.train.steps):
            return
        started = time.perf_counter()
        result = self.measure()
        if result is None:  # not rank 0
            return
        record.evaluated = {**result, "eval_seconds": time.perf_counter() - started}
        if self.tracker and not due(step, self.cfg.train.log_every, self.cfg.train.steps):
            self.tracker.log({"step": step, **record.evaluated})  # a step without a metrics line of its own

    def _hand_over(self, record: StepRecord) -> None:
        """Rank 0: record what has landed, submit this step's exports when an evaluation is due."""
        if self.ctx.rank != 0:
            return
        step = record.state.step
        self._record(self.off_path.landed(), step)
        if due(step, self.every, self.cfg.train.steps):
            self.off_path.submit(step, snapshot(self.task))
        record.evaluating = self.off_path.pending()

    def finish(self, step: int) -> None:
        """After the last step: the run ends when its last evaluation has landed."""
        if self.off_path is None or self.ctx.rank != 0:
            return
        pending = self.off_path.pending()
        if pending:
            self.tracker.message(f"waiting for the evaluation of step(s) {', '.join(map(str, pending))}")
        self._record(self.off_path.landed(wait=True), step)

    def _record(self, landed: list[Landed], step: int) -> None:
        if landed:
            record_landed(landed, self.tracker, self.ctx.run_uri, self.cfg, step, self.off_path.pending())
