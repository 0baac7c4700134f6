"""Evaluation off the training path (eval.where): what rank 0 hands over at a due step (a CPU copy of the task's
exported nets), what measures that copy elsewhere (the task's own measurement, on a task built there: the numbers
are the inline ones for the same weights), and what rank 0 does with the numbers when they land (a metrics line of
the evaluated step, that step's checkpoint's meta.json, retention again). No Ray here: the backend runs
`ExportMeasure` where it likes (runtime/offpath_eval.py: a Ray actor)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from gan_dist import checkpoint as ckpt
from gan_dist.config import Config
from gan_dist.data.placement import Dataset
from gan_dist.tracking import RunTracker
from gan_dist.train.context import Landed
from gan_dist.train.task import Task
from gan_dist.train.tasks import build_task

Exports = dict[str, dict[str, torch.Tensor]]


def snapshot(task: Task) -> Exports:
    """A CPU copy of what the task exports (the EMA generator, the translators, ...): training goes on changing
    the nets while it is measured."""
    return {name: {key: value.detach().to("cpu", copy=True) for key, value in tensors.items()}
            for name, tensors in task.export().items()}


def load_exports(task: Task, exports: Exports) -> None:
    """Put exported weights into the task's nets. Task.export() returns the nets' own state dicts, whose tensors are
    the nets' parameters and buffers: copying into them loads the nets."""
    live = task.export()
    for name, tensors in exports.items():
        for key, value in tensors.items():
            live[name][key].copy_(value)


@dataclass
class MeasureContext:
    """What Task.measure reads of a worker context: one process, all of each dataset's rows."""

    datasets: dict[str, Dataset]
    device: torch.device
    rank: int = 0
    world_size: int = 1


class ExportMeasure:
    """The task's measurement of exported nets, outside training: built once (the feature network, the real
    features), then called with each step's exports."""

    def __init__(self, cfg: Config, datasets: dict[str, Dataset], device: torch.device):
        self.task = build_task(cfg, datasets, device)
        self.measure = self.task.measure(MeasureContext(datasets, device))
        if self.measure is None:
            raise ValueError(f"task.kind={cfg.task.kind} measures nothing with eval.features={cfg.eval.features}")

    def __call__(self, exports: Exports) -> dict[str, float]:
        started = time.perf_counter()
        load_exports(self.task, exports)
        return {**self.measure(), "eval_seconds": time.perf_counter() - started}


def record_landed(landed: list[Landed], tracker: RunTracker, run_uri: str, cfg: Config, step: int,
                  pending: tuple[int, ...]) -> None:
    """Rank 0, at `step`: each landed evaluation to metrics.jsonl and W&B at the step it measured and into that
    step's checkpoint's meta.json (when one was written and is still kept), then retention again, which may now
    keep a better checkpoint by run.keep_best. A failed one is a warning: training goes on."""
    r = cfg.run
    recorded = False
    for result in landed:
        if result.metrics is None:
            tracker.message(f"warning: the evaluation of step {result.step} failed ({result.error}); training goes on")
            continue
        tracker.log_evaluation(result.step, result.metrics, step)
        recorded |= ckpt.add_metrics(run_uri, result.step, result.metrics)
    if recorded:
        ckpt.prune(run_uri, r.keep_checkpoints, step, r.keep_best, r.keep_best_mode, pending)
