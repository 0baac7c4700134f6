"""Evaluation off the training path on Ray (eval.where=ray, or auto on the Ray backend): one actor per run with
its own resources (eval.cpus, eval.gpus), started by rank 0 at the first due evaluation, measures each step's
exported nets in turn while training goes on; rank 0 collects what has finished without waiting."""

from __future__ import annotations

import sys

import ray
import torch
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from gan_dist.config import Config, config_from_dict
from gan_dist.data.placement import Dataset
from gan_dist.train.context import Landed
from gan_dist.train.offpath import ExportMeasure, Exports


class MeasureActor:
    """ExportMeasure in a process of its own: its feature network and real features are built once per run."""

    def __init__(self, config: dict, datasets: dict[str, Dataset]):
        device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")  # Ray shows it only the GPUs it reserved
        self.measure = ExportMeasure(config_from_dict(config), datasets, device)

    def measure_exports(self, exports: Exports) -> dict[str, float]:
        return self.measure(exports)


class RayEvaluations:
    """Rank 0's evaluations in a MeasureActor, preferably on rank 0's node (where its dataset paths are; a cluster
    reads its data from object storage anyway). An actor that died (its node lost) is replaced at the next due
    evaluation."""

    def __init__(self, cfg: Config, datasets: dict[str, Dataset]):
        self.cfg, self.datasets = cfg, datasets
        self.actor = None
        self.running: dict[ray.ObjectRef, int] = {}  # result -> the step it measures

    def submit(self, step: int, exports: Exports) -> None:
        if self.actor is None:
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
            actor_class = ray.remote(num_cpus=self.cfg.eval.cpus, num_gpus=self.cfg.eval.gpus,
                                     scheduling_strategy=here)(MeasureActor)
            self.actor = actor_class.remote(self.cfg.model_dump(), self.datasets)
        self.running[self.actor.measure_exports.remote(exports)] = step

    def landed(self, wait: bool = False) -> list[Landed]:
        if not self.running:
            return []
        done, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=None if wait else 0)
        results = []
        for ref in done:
            step = self.running.pop(ref)
            try:
                results.append(Landed(step, ray.get(ref)))
            except RayError as exc:
                if isinstance(exc, (ActorDiedError, ActorUnavailableError)):
                    self.actor = None
                results.append(Landed(step, None, _last_line(exc)))
        return sorted(results, key=lambda result: result.step)

    def pending(self) -> tuple[int, ...]:
        return tuple(sorted(self.running.values()))


def missing_room(cfg: Config) -> str | None:
    """Why the cluster has no room for the evaluation actor beside the training workers (at MAX), or None. The run
    waits for its last evaluation at the end, holding its workers: without room it would never evaluate."""
    total, r, e = ray.cluster_resources(), cfg.run, cfg.eval
    cpus = total.get("CPU", 0) - r.max_workers * r.cpus_per_worker
    gpus = total.get("GPU", 0) - (r.max_workers if r.gpu else 0)
    if cpus >= e.cpus and gpus >= e.gpus:
        return None
    return (f"the evaluation actor asks for {e.cpus:g} CPU(s) and {e.gpus:g} GPU(s) and the Ray cluster has "
            f"{max(cpus, 0):g} CPU(s) and {max(gpus, 0):g} GPU(s) beside the training workers")


def place_evaluation(cfg: Config, measures: bool) -> Config:
    """Where the run evaluates, decided once at its start. eval.where=auto: an evaluation actor when the cluster has
    room for it beside the workers, else inline (said in one line): a run must not wait at its end for room that may
    never come. eval.where=ray without room: kept with a warning, since an autoscaler may still add it."""
    if cfg.eval.where == "inline" or not measures:
        return cfg
    short = missing_room(cfg)
    if short is None:
        return cfg
    if cfg.eval.where == "ray":
        print(f"warning: {short}; until the cluster adds room, evaluations wait and so does the end of the run "
              f"(lower eval.cpus/eval.gpus, or set eval.where=inline)", file=sys.stderr, flush=True)
        return cfg
    print(f"evaluation: inline in the training workers ({short}; add room or lower eval.cpus to evaluate off the "
          f"training path)", flush=True)
    return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"where": "inline"})})


def _last_line(exc: Exception) -> str:
    """The innermost error of a failed actor call, on one line (Ray's message carries the whole traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]
